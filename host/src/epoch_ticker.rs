//! The clock behind [`crate::Watchdog::Clock`]: one thread per process advances the epoch
//! of every engine that runs the component under it, every [`TICK`]. A guest call is given
//! [`mqtt_device::CALL_TICKS`] ticks, so a call that runs away traps within about a second.
//!
//! One thread for every engine instead of one per engine: a program (or a benchmark) may
//! load many components, and each would otherwise start a thread. The thread holds only
//! weak references, so it never keeps an engine alive, and it ends once no engine is left
//! (a later [`watch`] starts it again).

use std::sync::Mutex;
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances.
pub const TICK: Duration = Duration::from_millis(100);

struct Watched {
    engines: Vec<EngineWeak>,
    running: bool,
}

static WATCHED: Mutex<Watched> = Mutex::new(Watched { engines: Vec::new(), running: false });

/// Advance `engine`'s epoch every [`TICK`] from now on, for as long as it lives.
pub fn watch(engine: &Engine) {
    let mut w = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    w.engines.push(engine.weak());
    if !w.running {
        w.running = true;
        let spawned = std::thread::Builder::new().name("mqtt-host-epoch".into()).spawn(tick);
        if let Err(e) = spawned {
            // Without the thread a runaway call is not stopped; every other call still runs.
            w.running = false;
            tracing::error!("could not start the watchdog's clock thread ({e}); a guest call that never ends will hang its host");
        }
    }
}

fn tick() {
    loop {
        std::thread::sleep(TICK);
        let mut w = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
        w.engines.retain(|weak| weak.upgrade().inspect(Engine::increment_epoch).is_some());
        if w.engines.is_empty() {
            w.running = false;
            return;
        }
    }
}

#[cfg(all(test, feature = "compile"))]
mod tests {
    use super::*;
    use mqtt_device::{engine_config, Watchdog, CALL_TICKS};

    /// `(module (func (export "spin") (loop (br 0))))`: a call that never ends.
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // one type: [] -> []
        0x03, 0x02, 0x01, 0x00, // one function of that type
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // exported as "spin"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop { br 0 }
    ];

    #[test]
    fn a_call_that_never_ends_traps_once_its_ticks_have_passed() {
        let engine = Engine::new(&engine_config(Watchdog::Clock)).unwrap();
        watch(&engine);
        let module = wasmtime::Module::new(&engine, SPIN).unwrap();
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut store = wasmtime::Store::new(&engine, ());
            store.set_epoch_deadline(CALL_TICKS);
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
            let spin = instance.get_typed_func::<(), ()>(&mut store, "spin").unwrap();
            let started = std::time::Instant::now();
            let trap = spin.call(&mut store, ()).unwrap_err().downcast::<wasmtime::Trap>().ok();
            let _ = done.send((trap, started.elapsed()));
        });
        // Far beyond the budget: without the clock thread the call would never return.
        let (trap, took) = result.recv_timeout(Duration::from_secs(60)).expect("the watchdog stopped the call");
        assert_eq!(trap, Some(wasmtime::Trap::Interrupt));
        assert!(took >= TICK * (CALL_TICKS as u32 - 1), "trapped after {took:?}, before its ticks had passed");
    }
}
