//! The component on its own: the cost of the host/component boundary, its size (as rustc
//! makes it and as shipped, after the build's `wasm-opt -Oz`), and its linear memory under
//! load. No network, no broker but the
//! in-memory loopback one.
//!
//! `cargo bench -p mqtt-host --bench boundary` measures the same operations with criterion
//! (confidence intervals, outlier analysis: what to use while optimising one of them). This
//! module times them by hand, median of batches, because the report needs the figures as
//! values, in the same run as everything else, and criterion only prints them.

use std::time::Instant;

use mqtt_host::loopback::Loopback;
use mqtt_host::{default_config, ComponentFile, Device, Event, Publish, Qos, Watchdog};

/// Median time per operation in ns: `batches` batches of `per_batch` operations each.
pub fn median_ns(batches: usize, per_batch: u64, mut op: impl FnMut()) -> f64 {
    let per_op: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                op();
            }
            t.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    crate::median(per_op)
}

pub struct Boundary {
    pub load_ms: f64,
    pub compile_ms: f64,
    pub instantiate_us: f64,
    pub idle_poll_ns: f64,
    pub qos0_to_wire_ns: f64,
    pub qos1_to_puback_ns: f64,
    /// The same under `Watchdog::Fuel` (the simulator's watchdog; the rest run under the clock).
    pub qos1_to_puback_fuel_ns: f64,
}

fn connected(component: &ComponentFile, lo: &Loopback) -> anyhow::Result<Device> {
    let mut d = Device::new(component, Box::new(lo.clone()), default_config("broker", "bench"), "bench")?;
    d.connect()?;
    for _ in 0..10 {
        if d.poll()?.iter().any(|e| matches!(e, Event::Up(_))) {
            return Ok(d);
        }
    }
    anyhow::bail!("bench device did not connect to the loopback broker")
}

pub fn boundary(quick: bool) -> anyhow::Result<Boundary> {
    let scale = if quick { 100 } else { 1 };
    let batches = if quick { 3 } else { 9 };
    let component = ComponentFile::embedded()?;
    anyhow::ensure!(component.is_precompiled(), "the embedded component did not load precompiled on the machine that built it");
    let load_ms = median_ns(if quick { 3 } else { 9 }, 1, || {
        let _ = ComponentFile::embedded();
    }) / 1e6;
    let compile_ms = median_ns(if quick { 1 } else { 5 }, 1, || {
        let _ = ComponentFile::from_bytes(mqtt_host::EMBEDDED_COMPONENT);
    }) / 1e6;
    let instantiate_us = median_ns(batches, 200 / scale.min(100), || {
        let _ = Device::new(&component, Box::new(Loopback::new()), default_config("broker", "bench"), "bench");
    }) / 1e3;
    let lo = Loopback::new();
    let mut d = connected(&component, &lo)?;
    let idle_poll_ns = median_ns(batches, 100_000 / scale, || {
        let _ = d.poll();
    });
    let publish = |qos| Publish { topic: "bench/t".into(), payload: vec![7; 100], qos, retain: false, properties: None, deadline_ms: None };
    let p0 = publish(Qos::AtMostOnce);
    // A host polls now and then, so completion events do not pile up in the guest (its
    // memory is capped); one poll per 256 publishes adds under 1 % to the figure.
    let mut published = 0u32;
    let qos0_to_wire_ns = median_ns(batches, 20_000 / scale, || {
        let _ = d.publish(p0.clone());
        published += 1;
        if published.is_multiple_of(256) {
            let _ = d.poll();
        }
    });
    let p1 = publish(Qos::AtLeastOnce);
    let to_puback = |d: &mut Device| {
        median_ns(batches, 20_000 / scale, || {
            let _ = d.publish(p1.clone());
            let _ = d.poll();
        })
    };
    let qos1_to_puback_ns = to_puback(&mut d);
    let fuel = ComponentFile::embedded_with(Watchdog::Fuel)?;
    let qos1_to_puback_fuel_ns = to_puback(&mut connected(&fuel, &Loopback::new())?);
    Ok(Boundary { load_ms, compile_ms, instantiate_us, idle_poll_ns, qos0_to_wire_ns, qos1_to_puback_ns, qos1_to_puback_fuel_ns })
}

pub struct Size {
    pub component: usize,
    /// The shipped core module: rustc's output after the build's `wasm-opt -Oz`.
    pub core_module: usize,
    /// Function bodies only (the code section): what "64 KiB of code" is about.
    pub code: usize,
    /// The same two figures for the module as rustc made it.
    pub rustc_core_module: usize,
    pub rustc_code: usize,
    pub memory_start: usize,
    pub memory_peak: usize,
}

pub fn size_and_memory(quick: bool) -> anyhow::Result<Size> {
    let component = ComponentFile::embedded()?;
    let core = std::fs::read(mqtt_host::CORE_MODULE_PATH)?;
    let rustc_core = std::fs::read(mqtt_host::RUSTC_CORE_MODULE_PATH)?;
    let publishes = if quick { 1_000 } else { 10_000 };
    let (memory_start, memory_peak) = mqtt_host::loopback::memory_under_load(&component, publishes, 100, 100).map_err(anyhow::Error::msg)?;
    Ok(Size {
        component: mqtt_host::EMBEDDED_COMPONENT.len(),
        core_module: core.len(),
        code: code_section_len(&core)?,
        rustc_core_module: rustc_core.len(),
        rustc_code: code_section_len(&rustc_core)?,
        memory_start,
        memory_peak,
    })
}

/// Bytes of the code section (function bodies) of a core module.
fn code_section_len(module: &[u8]) -> anyhow::Result<usize> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::CodeSectionStart { range, .. } = payload? {
            return Ok(range.len());
        }
    }
    anyhow::bail!("the module has no code section")
}

/// The power-cut store's cost: time per QoS 1 publish with and without it, and what it
/// writes (the wear a flash chip would see).
pub struct StoreFigures {
    /// QoS 1 publish → PUBACK handled, loopback broker: no store, a RAM flash, a file
    /// flash that fsyncs.
    pub no_store_ns: f64,
    pub ram_ns: f64,
    pub file_ns: f64,
    /// Per 1,000 QoS 1 messages of 100 B, published and acknowledged one at a time.
    pub bytes_per_1000: u64,
    pub erases_per_1000: u64,
    pub syncs_per_1000: u64,
    pub geometry: mqtt_host::Geometry,
}

fn store_device<F: mqtt_host::Flash + Send + 'static>(component: &ComponentFile, flash: Option<std::sync::Arc<std::sync::Mutex<F>>>) -> anyhow::Result<Device> {
    let mut lo = Loopback::new();
    if let Some(f) = flash {
        lo = lo.with_flash(f);
    }
    connected(component, &lo)
}

/// Median time of a QoS 1 publish and the poll that handles its PUBACK.
fn publish_time<F: mqtt_host::Flash + Send + 'static>(
    component: &ComponentFile,
    flash: Option<std::sync::Arc<std::sync::Mutex<F>>>,
    batches: usize,
    per_batch: u64,
) -> anyhow::Result<f64> {
    let p1 = Publish { topic: "bench/t".into(), payload: vec![7; 100], qos: Qos::AtLeastOnce, retain: false, properties: None, deadline_ms: None };
    let mut d = store_device(component, flash)?;
    Ok(median_ns(batches, per_batch, || {
        let _ = d.publish(p1.clone());
        let _ = d.poll();
    }))
}

pub fn store(quick: bool) -> anyhow::Result<StoreFigures> {
    use std::sync::{Arc, Mutex};
    let component = ComponentFile::embedded()?;
    let batches = if quick { 3 } else { 9 };
    let per_batch = if quick { 200 } else { 2_000 };
    let p1 = Publish { topic: "bench/t".into(), payload: vec![7; 100], qos: Qos::AtLeastOnce, retain: false, properties: None, deadline_ms: None };
    let geometry = mqtt_host::file_flash::DEFAULT_GEOMETRY;
    let no_store_ns = publish_time::<mqtt_host::MemFlash>(&component, None, batches, per_batch)?;
    let ram_ns = publish_time(&component, Some(Arc::new(Mutex::new(mqtt_host::MemFlash::new(geometry)))), batches, per_batch)?;
    let dir = tempfile::tempdir()?;
    let (file, _) = mqtt_host::FileFlash::open(&dir.path().join("bench.store"), geometry)?;
    let file_ns = publish_time(&component, Some(Arc::new(Mutex::new(file))), batches, per_batch / 10)?;
    // Wear: a fresh RAM flash, 1,000 messages (after one to connect and settle).
    let ram = Arc::new(Mutex::new(mqtt_host::MemFlash::new(geometry)));
    let syncs = Arc::new(Mutex::new(0u64));
    let mut d = store_device(&component, Some(Arc::new(Mutex::new(CountSyncs(ram.clone(), syncs.clone())))))?;
    let before = ram.lock().map(|f| (f.bytes_written, f.erases)).unwrap_or_default();
    let syncs_before = *syncs.lock().unwrap();
    for _ in 0..1_000 {
        d.publish(p1.clone())?;
        d.poll()?;
    }
    let after = ram.lock().map(|f| (f.bytes_written, f.erases)).unwrap_or_default();
    let syncs_after = *syncs.lock().unwrap();
    Ok(StoreFigures {
        no_store_ns,
        ram_ns,
        file_ns,
        bytes_per_1000: after.0 - before.0,
        erases_per_1000: after.1 - before.1,
        syncs_per_1000: syncs_after - syncs_before,
        geometry,
    })
}

/// A RAM flash that also counts syncs (`MemFlash` needs none, so it does not).
struct CountSyncs(std::sync::Arc<std::sync::Mutex<mqtt_host::MemFlash>>, std::sync::Arc<std::sync::Mutex<u64>>);

impl mqtt_host::Flash for CountSyncs {
    fn geometry(&self) -> mqtt_host::Geometry {
        self.0.lock().map(|f| mqtt_host::Flash::geometry(&*f)).unwrap_or_default()
    }
    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, mqtt_protocol::store::FlashError> {
        self.0.lock().map_err(|_| mqtt_protocol::store::FlashError::Io)?.read(offset, len)
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), mqtt_protocol::store::FlashError> {
        self.0.lock().map_err(|_| mqtt_protocol::store::FlashError::Io)?.write(offset, data)
    }
    fn erase(&mut self, sector: u32) -> Result<(), mqtt_protocol::store::FlashError> {
        self.0.lock().map_err(|_| mqtt_protocol::store::FlashError::Io)?.erase(sector)
    }
    fn sync(&mut self) -> Result<(), mqtt_protocol::store::FlashError> {
        *self.1.lock().map_err(|_| mqtt_protocol::store::FlashError::Io)? += 1;
        Ok(())
    }
}
