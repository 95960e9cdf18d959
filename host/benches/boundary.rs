//! Cost of the host/component boundary: instantiation, an idle `poll`, and a publish from
//! the API call to bytes on the (in-memory) wire. Also prints the component's size.
//!
//! Run: `cargo bench -p mqtt-host --bench boundary`

use criterion::{criterion_group, criterion_main, Criterion};
use mqtt_host::loopback::Loopback;
use mqtt_host::{default_config, ComponentFile, Device, Event, Publish, Qos, Watchdog};

fn connected(component: &ComponentFile, lo: &Loopback) -> Device {
    let mut d = Device::new(component, Box::new(lo.clone()), default_config("broker", "bench"), "bench").unwrap();
    d.connect().unwrap();
    for _ in 0..10 {
        if d.poll().unwrap().iter().any(|e| matches!(e, Event::Up(_))) {
            return d;
        }
    }
    panic!("bench device did not connect");
}

fn boundary(c: &mut Criterion) {
    let component = ComponentFile::embedded().unwrap();
    eprintln!(
        "component: {} bytes ({:.1} KiB); core module before encoding: {} bytes",
        component.bytes().len(),
        component.bytes().len() as f64 / 1024.0,
        std::fs::metadata(mqtt_host::CORE_MODULE_PATH).map_or(0, |m| m.len())
    );

    c.bench_function("load the embedded component, precompiled (Engine + InstancePre)", |b| b.iter(|| ComponentFile::embedded().unwrap()));
    c.bench_function("compile the component (Engine + InstancePre)", |b| b.iter(|| ComponentFile::from_bytes(mqtt_host::EMBEDDED_COMPONENT).unwrap()));

    c.bench_function("instantiate + create client", |b| {
        b.iter(|| Device::new(&component, Box::new(Loopback::new()), default_config("broker", "bench"), "bench").unwrap())
    });

    let lo = Loopback::new();
    let mut d = connected(&component, &lo);
    c.bench_function("idle poll", |b| b.iter(|| d.poll().unwrap()));
    // What a host does on every wake: poll, then ask when to wake next.
    c.bench_function("idle poll, then the next deadline", |b| {
        b.iter(|| {
            d.poll().unwrap();
            d.next_deadline().unwrap()
        })
    });

    c.bench_function("publish QoS 0, 100 B, to the wire", |b| {
        let p = Publish { topic: "bench/t".into(), payload: vec![7; 100], qos: Qos::AtMostOnce, retain: false, properties: None, deadline_ms: None };
        // A host polls now and then: answers not taken count against `max_queued`.
        let mut published = 0u32;
        b.iter(|| {
            d.publish(p.clone()).unwrap();
            published += 1;
            if published.is_multiple_of(256) {
                d.poll().unwrap();
            }
        })
    });

    c.bench_function("publish QoS 1, 100 B, to PUBACK, then the next deadline", |b| publish_to_puback(b, &mut d));

    // The same under fuel, the watchdog the simulator runs the component with: what
    // counting instructions costs.
    let fuel = ComponentFile::embedded_with(Watchdog::Fuel).unwrap();
    let lo = Loopback::new();
    let mut d = connected(&fuel, &lo);
    c.bench_function("publish QoS 1, 100 B, to PUBACK, then the next deadline (Watchdog::Fuel)", |b| publish_to_puback(b, &mut d));
}

fn publish_to_puback(b: &mut criterion::Bencher, d: &mut Device) {
    let p = Publish { topic: "bench/t".into(), payload: vec![7; 100], qos: Qos::AtLeastOnce, retain: false, properties: None, deadline_ms: None };
    b.iter(|| {
        d.publish(p.clone()).unwrap();
        let events = d.poll().unwrap();
        (events, d.next_deadline().unwrap())
    })
}

criterion_group!(benches, boundary);
criterion_main!(benches);
