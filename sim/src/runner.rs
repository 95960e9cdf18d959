//! One run of one scenario with one seed: build the turmoil simulation (the broker's host,
//! which the observer shares, and the device hosts), replay the fault timeline, then check
//! the expectations against what happened.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mqtt_host::{default_config, ComponentFile, Config, LinkState, Subscription};
use mqtt_protocol::SplitMix64;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::device::{self, qos, DeviceCtx};
use crate::flash::FlashCell;
use crate::observer::{self, ObserverCtx};
use crate::scenario::{AckKind, CutDuring, Fault, Scenario, Workload};
use crate::world::{trace_hash, Record, Shared, World};

pub(crate) const BROKER: &str = "broker";

/// Names of the devices: `device`, or `device-0`… for a fleet. Each is also its turmoil
/// host's name unless `devices_per_host` groups them (see [`host_names`]).
fn device_names(sc: &Scenario) -> Vec<String> {
    if sc.devices == 1 {
        vec!["device".into()]
    } else {
        (0..sc.devices).map(|i| format!("device-{i}")).collect()
    }
}

/// Turmoil hosts holding the devices: one per device, or `devices-<first>` per group of
/// `devices_per_host`.
fn host_names(sc: &Scenario) -> Vec<String> {
    if sc.devices_per_host <= 1 {
        return device_names(sc);
    }
    (0..sc.devices).step_by(sc.devices_per_host as usize).map(|first| format!("devices-{first}")).collect()
}

/// `{device}` in a topic or filter becomes the device's index.
fn for_device(template: &str, index: u32) -> String {
    template.replace("{device}", &index.to_string())
}

/// One expectation's verdict.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub passed: bool,
    /// The `qos1_*` counts take QoS 1 and QoS 2 messages together (both are acknowledged);
    /// the names stay as they were for the JSON this struct is written as.
    pub qos1_published: u64,
    pub qos1_acked: u64,
    pub qos1_delivered: u64,
    pub qos1_lost: u64,
    /// QoS 1/2 messages the broker accepted and let go of itself (restart without
    /// persistence, queue overflow, expiry): not counted as lost.
    pub broker_dropped: u64,
    pub duplicates: u64,
    pub reconnects: u64,
    pub watchdog_restarts: u64,
    pub discards: u64,
    pub sim_seconds: f64,
    pub wall_seconds: f64,
    pub trace_hash: String,
    pub expectations: Vec<Check>,
    #[serde(skip)]
    pub trace: Vec<String>,
}

/// What the timeline does at an instant.
#[derive(Debug, Clone)]
enum Step {
    Link(LinkState),
    Hold,
    Release,
    /// A silent link or a broker outage that began at this time is over: the network is
    /// whole again (for `recover_within_ms`).
    Healed(u64),
    Latency(u64, u64),
    /// Broker `broker` (0-based) crashes, or comes back.
    BrokerCrash {
        persist: bool,
        broker: usize,
    },
    BrokerBounce {
        broker: usize,
    },
    DropAcks(AckKind, u32),
    DelayAcks(AckKind, u32, u64),
    Refuse(Option<u8>),
    StopPings(bool),
    Partition,
    Repair,
    DeviceCrash,
    DeviceBounce,
    /// A power cut will fall inside the devices' next matching flash operation.
    ArmCut(CutDuring),
    Dns(bool),
    ServerDisconnect(u8),
    AppDisconnect,
    /// The devices' next call into the component traps.
    GuestTrap,
    App(String, Option<u8>),
    /// The application cancels what it published on this topic and has not seen complete.
    Cancel(String),
    /// The observer leaves (true) or comes back.
    ObserverAway(bool),
}

/// Every device that went down within each `(since, t)` window is up again within `limit`
/// ms of `t`.
fn back_up_within(sc: &Scenario, rec: &Record, windows: &[(u64, u64)], limit: u64, what: &str) -> (bool, String) {
    let mut worst = 0u64;
    let mut missing = None;
    for device in 0..sc.devices {
        for &(since, t) in windows {
            let disturbed = rec.downs.iter().any(|(d, at, _)| *d == device && (since..=t).contains(at));
            if !disturbed {
                continue;
            }
            match rec.ups.iter().find(|(d, u)| *d == device && *u >= t) {
                Some((_, u)) => worst = worst.max(u - t),
                None => missing = Some(t),
            }
        }
    }
    match missing {
        Some(t) => (false, format!("never up again after {what} at {t} ms")),
        None => (worst <= limit, format!("slowest reconnect after {what}: {worst} ms (limit {limit})")),
    }
}

fn ms(s: f64) -> u64 {
    (s * 1000.0).round() as u64
}

/// The faults as timed steps, in time order (file order for ties).
fn timeline(sc: &Scenario, seed: u64) -> Vec<(u64, Step)> {
    let mut t: Vec<(u64, Step)> = Vec::new();
    let base = (sc.network.latency_ms, sc.network.jitter_ms);
    let link_down = |t: &mut Vec<(u64, Step)>, at: u64, len: u64| {
        t.push((at, Step::Hold));
        t.push((at, Step::Link(LinkState::Down)));
        t.push((at + len, Step::Release));
        t.push((at + len, Step::Link(LinkState::Up)));
    };
    for f in &sc.fault {
        match *f {
            Fault::LinkDown { at_s, for_s } => link_down(&mut t, ms(at_s), ms(for_s)),
            Fault::Roam { at_s, gap_ms } => link_down(&mut t, ms(at_s), gap_ms),
            Fault::LinkFlap { at_s, count, down_s, up_s } => {
                for i in 0..u64::from(count) {
                    link_down(&mut t, ms(at_s) + i * ms(down_s + up_s), ms(down_s));
                }
            }
            Fault::SilentLink { at_s, for_s } => {
                t.push((ms(at_s), Step::Hold));
                t.push((ms(at_s + for_s), Step::Release));
                t.push((ms(at_s + for_s), Step::Healed(ms(at_s))));
            }
            Fault::Latency { at_s, for_s, latency_ms, jitter_ms } => {
                t.push((ms(at_s), Step::Latency(latency_ms, jitter_ms)));
                t.push((ms(at_s + for_s), Step::Latency(base.0, base.1)));
            }
            Fault::BrokerRestart { at_s, down_s, persist, broker } => {
                let broker = broker as usize - 1;
                t.push((ms(at_s), Step::BrokerCrash { persist, broker }));
                t.push((ms(at_s + down_s), Step::BrokerBounce { broker }));
                t.push((ms(at_s + down_s), Step::Healed(ms(at_s))));
            }
            Fault::BrokerDown { at_s, for_s, broker } => {
                let broker = broker as usize - 1;
                t.push((ms(at_s), Step::BrokerCrash { persist: sc.broker.persist_sessions, broker }));
                t.push((ms(at_s + for_s), Step::BrokerBounce { broker }));
                t.push((ms(at_s + for_s), Step::Healed(ms(at_s))));
            }
            Fault::DropAcks { at_s, packet, count } => t.push((ms(at_s), Step::DropAcks(packet, count))),
            Fault::DelayAcks { at_s, packet, count, ms: late } => t.push((ms(at_s), Step::DelayAcks(packet, count, late))),
            Fault::Refuse { at_s, for_s, code } => {
                t.push((ms(at_s), Step::Refuse(Some(code))));
                t.push((ms(at_s + for_s), Step::Refuse(None)));
            }
            Fault::StopPings { at_s, for_s } => {
                t.push((ms(at_s), Step::StopPings(true)));
                t.push((ms(at_s + for_s), Step::StopPings(false)));
            }
            Fault::HalfOpen { at_s, for_s } => {
                // The broker dies unseen behind a partition and comes back without the
                // connection; the device's TCP believes it is still open.
                t.push((ms(at_s), Step::Partition));
                t.push((ms(at_s), Step::BrokerCrash { persist: true, broker: 0 }));
                t.push((ms(at_s), Step::BrokerBounce { broker: 0 }));
                t.push((ms(at_s + for_s), Step::Repair));
            }
            Fault::PowerCycle { at_s, off_s } => {
                // A power cut sends no FIN: partition, crash, repair, boot.
                t.push((ms(at_s), Step::Partition));
                t.push((ms(at_s), Step::DeviceCrash));
                t.push((ms(at_s + off_s), Step::Repair));
                t.push((ms(at_s + off_s), Step::DeviceBounce));
            }
            Fault::PowerCut { at_s, off_s, during, within_s } => {
                // The cut falls inside the next matching flash operation (the device is
                // off the network from then on); the host goes down for good at the end
                // of the window, whatever happened.
                t.push((ms(at_s), Step::ArmCut(during)));
                t.push((ms(at_s + within_s), Step::Partition));
                t.push((ms(at_s + within_s), Step::DeviceCrash));
                t.push((ms(at_s + within_s + off_s), Step::Repair));
                t.push((ms(at_s + within_s + off_s), Step::DeviceBounce));
            }
            Fault::DnsFailure { at_s, for_s } => {
                t.push((ms(at_s), Step::Dns(true)));
                t.push((ms(at_s + for_s), Step::Dns(false)));
            }
            Fault::ServerDisconnect { at_s, reason } => t.push((ms(at_s), Step::ServerDisconnect(reason))),
            Fault::Disconnect { at_s } => t.push((ms(at_s), Step::AppDisconnect)),
            Fault::GuestTrap { at_s } => t.push((ms(at_s), Step::GuestTrap)),
            Fault::Subscribe { at_s, ref filter, qos } => t.push((ms(at_s), Step::App(filter.clone(), Some(qos)))),
            Fault::Unsubscribe { at_s, ref filter } => t.push((ms(at_s), Step::App(filter.clone(), None))),
            Fault::Cancel { at_s, ref topic } => t.push((ms(at_s), Step::Cancel(topic.clone()))),
            Fault::ObserverAway { at_s, for_s } => {
                t.push((ms(at_s), Step::ObserverAway(true)));
                t.push((ms(at_s + for_s), Step::ObserverAway(false)));
            }
        }
    }
    if let Some(chaos) = &sc.chaos {
        // Drawn from the seed, so a failing seed replays the same chaos.
        let mut rng = SplitMix64::new(seed ^ 0x5EED_C4A0_5000_0000);
        let span = ms(sc.duration_s * 0.8).max(1);
        for _ in 0..chaos.link_drops {
            let at = rng.below(span);
            let len = 1_000 + rng.below(ms(chaos.max_down_s).max(1_001) - 1_000);
            link_down(&mut t, at, len);
        }
        for _ in 0..chaos.broker_restarts {
            let at = rng.below(span);
            t.push((at, Step::BrokerCrash { persist: sc.broker.persist_sessions, broker: 0 }));
            t.push((at + 1_000 + rng.below(5_000), Step::BrokerBounce { broker: 0 }));
        }
        for _ in 0..chaos.power_cuts {
            let at = rng.below(span);
            let off = 1_000 + rng.below(5_000);
            t.push((at, Step::ArmCut(CutDuring::Any)));
            t.push((at + 2_000, Step::Partition));
            t.push((at + 2_000, Step::DeviceCrash));
            t.push((at + 2_000 + off, Step::Repair));
            t.push((at + 2_000 + off, Step::DeviceBounce));
        }
    }
    t.sort_by_key(|(at, _)| *at);
    t
}

/// The component config for device `index` of the scenario.
pub fn device_config(sc: &Scenario, seed: u64, index: u32) -> Config {
    let d = &sc.device;
    let mut c = default_config(BROKER, "device-1");
    // Validated with the scenario: the will's QoS is the only key that can be wrong here.
    d.apply_to(&mut c).expect("scenario validated");
    // A fleet's devices share the file: each gets its own id (an empty one is the broker's
    // to assign) and its own will topic.
    if sc.devices > 1 && !c.client_id.is_empty() {
        c.client_id = format!("{}-{index}", c.client_id);
    }
    if let Some(w) = &mut c.will {
        w.topic = for_device(&w.topic, index);
    }
    // The run's seed, not the file's, varies the jitter from one seed of a sweep to the next.
    c.seed = seed.wrapping_mul(0x9E37_79B9).wrapping_add(u64::from(index)).wrapping_add(d.seed.unwrap_or(0));
    c
}

/// Runs `sc` with `seed`. `component` should run under `mqtt_host::Watchdog::Fuel`
/// (`ComponentFile::embedded_with(Watchdog::Fuel)`, as `mqtt-sim` loads it): under the clock
/// the run is still repeatable, except where a call runs away, which then stops at a point
/// that depends on the machine.
pub fn run(sc: &Scenario, name: &str, seed: u64, component: &ComponentFile) -> Outcome {
    run_with_fault(sc, name, seed, component, None)
}

/// [`run`], with the devices' clients told to show a deliberate fault (`component` must be
/// the test-faults build, `mqtt_host::FAULTY_COMPONENT`).
pub fn run_with_fault(sc: &Scenario, name: &str, seed: u64, component: &ComponentFile, fault: Option<&str>) -> Outcome {
    run_watched(sc, name, seed, component, fault, &mut |_| {})
}

/// [`run_with_fault`], telling `watch` how far the run is (simulated milliseconds) every
/// thousand or so steps, for a progress display: a run is as long as its scenario says,
/// and a long one would otherwise be silent for as long as it takes. `watch` sees the
/// run; nothing it does reaches it.
pub fn run_watched(sc: &Scenario, name: &str, seed: u64, component: &ComponentFile, fault: Option<&str>, watch: &mut dyn FnMut(u64)) -> Outcome {
    let started = std::time::Instant::now();
    let total = sc.total_ms();
    let world = Shared::new(World::new(sc.devices as usize, sc.workload.len()));
    world.lock().brokers = sc.brokers as usize;
    if let Some(store) = &sc.device.store {
        let mut w = world.lock();
        for (i, cell) in w.flash.iter_mut().enumerate() {
            *cell = Some(FlashCell::new(store.geometry(), seed ^ (0xF1A5_0000 + i as u64)));
        }
    }
    // One wakeup per device: its sockets' readiness and the timeline's changes wake that
    // device alone (a shared one would wake an arbitrary device instead of the one with data).
    let wakes: Vec<Arc<Notify>> = (0..sc.devices).map(|_| Arc::new(Notify::new())).collect();
    let names = device_names(sc);
    let hosts = host_names(sc);
    let mut groups: Vec<Vec<Arc<DeviceCtx>>> = vec![Vec::new(); hosts.len()];
    let configs: Vec<Config> = (0..sc.devices)
        .map(|i| device_config(sc, seed, i))
        .map(|c| match fault {
            Some(f) => mqtt_host::with_test_fault(c, f),
            None => c,
        })
        .collect();
    let ids = configs.iter().map(|c| c.client_id.clone()).collect();
    // Injected traffic comes from the first broker.
    let brokers: Vec<Broker> = (0..sc.brokers as usize)
        .map(|i| Broker::new(sc.broker.clone(), sc.observe.clone(), Vec::clone(&ids), if i == 0 { sc.inject.clone() } else { Vec::new() }, world.clone()))
        .collect();

    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(total + 60_000))
        .tick_duration(Duration::from_millis(sc.tick_ms))
        .min_message_latency(Duration::from_millis(sc.network.latency_ms))
        .max_message_latency(Duration::from_millis(sc.network.latency_ms + sc.network.jitter_ms))
        .epoch(UNIX_EPOCH + Duration::from_secs(1_750_000_000))
        .tcp_capacity(1 << 16)
        .rng_seed(seed)
        .build();

    // Each observer shares its broker's host and lives through its crashes (see broker.rs);
    // what they see goes into one record.
    for (broker, host) in brokers.iter().zip(broker_names(brokers.len())) {
        let wake = Arc::new(Notify::new());
        world.lock().observer_wakes.push(wake.clone());
        let observer = Arc::new(ObserverCtx { component: component.clone(), filters: sc.observe.clone(), world: world.clone(), wake });
        let b = broker.clone();
        sim.host(host.as_str(), move || {
            let (broker, observer) = (b.clone(), observer.clone());
            async move {
                tokio::select! {
                    biased;
                    served = broker.run() => served,
                    observed = observer::run(observer) => observed,
                }
            }
        });
    }
    let mut wills = Vec::new();
    for (i, (name, config)) in names.iter().zip(configs).enumerate() {
        let i = i as u32;
        wills.extend(config.will.as_ref().map(|w| w.topic.clone()));
        let ctx = Arc::new(DeviceCtx {
            index: i,
            name: name.clone(),
            host: hosts[i as usize / sc.devices_per_host.max(1) as usize].clone(),
            component: component.clone(),
            config,
            subscriptions: sc
                .device
                .subscribe
                .iter()
                .map(|s| Subscription {
                    filter: for_device(&s.filter, i),
                    qos: qos(s.qos),
                    no_local: s.no_local,
                    retain_as_published: s.retain_as_published,
                    retain_handling: s.retain_handling,
                })
                .collect(),
            workloads: sc.workload.iter().map(|w| Workload { topic: for_device(&w.topic, i), ..w.clone() }).collect(),
            app_take_every_ms: sc.device.app_take_every_ms,
            auth_secret: sc.device.auth_secret.clone().map(String::into_bytes),
            world: world.clone(),
            wake: wakes[i as usize].clone(),
        });
        groups[i as usize / sc.devices_per_host.max(1) as usize].push(ctx);
    }
    for (host, group) in hosts.iter().zip(groups) {
        if let [ctx] = &group[..] {
            let ctx = ctx.clone();
            sim.host(host.as_str(), move || device::run(ctx.clone()));
        } else {
            // Several devices on one host: each runs as its own task on the host's runtime.
            sim.host(host.as_str(), move || {
                let group = group.clone();
                async move {
                    let tasks: Vec<_> = group.into_iter().map(|ctx| tokio::task::spawn_local(device::run(ctx))).collect();
                    for t in tasks {
                        t.await.map_err(|e| e.to_string())??;
                    }
                    Ok(())
                }
            });
        }
    }

    let steps = timeline(sc, seed);
    let mut next = 0;
    let mut elapsed = 0u64;
    let mut stepped = 0u64;
    while elapsed < total {
        stepped += 1;
        if stepped.is_multiple_of(1024) {
            watch(elapsed);
        }
        while next < steps.len() && steps[next].0 <= elapsed {
            apply(&mut sim, &steps[next].1, &hosts, &world, &brokers, &wakes, elapsed);
            next += 1;
        }
        if let Err(e) = sim.step() {
            world.lock().rec.host_errors.push(e.to_string());
            break;
        }
        elapsed = sim.elapsed().as_millis() as u64;
    }

    brokers.iter().for_each(Broker::record_totals);
    let mut w = world.lock();
    // The store writes only to erased bytes: a write that tried to set a bit back to 1 is a
    // bug NOR flash would hide (it keeps `old & new`), so the run fails on it.
    let flash_violations: u64 = w.flash.iter().flatten().map(|f| f.mem.violations).sum();
    if flash_violations > 0 {
        w.rec.protocol_violations.push(format!("flash: {flash_violations} writes tried to set a bit back to 1 (NOR flash cannot)"));
    }
    let trace = w.trace().to_vec();
    let mut outcome = evaluate(sc, name, seed, &w.rec, &wills);
    outcome.sim_seconds = elapsed as f64 / 1000.0;
    outcome.wall_seconds = started.elapsed().as_secs_f64();
    outcome.trace_hash = trace_hash(&trace);
    outcome.trace = trace;
    outcome
}

fn apply(sim: &mut turmoil::Sim<'_>, step: &Step, devices: &[String], world: &Shared, brokers: &[Broker], wakes: &[Arc<Notify>], now: u64) {
    let broker = &brokers[0];
    let broker_hosts = broker_names(brokers.len());
    world.lock().log(now, "timeline", "fault", json!({ "step": format!("{step:?}") }));
    match step {
        Step::Link(state) => {
            let mut w = world.lock();
            if *state == LinkState::Up && w.link != LinkState::Up {
                w.rec.link_returns.push(now);
            }
            w.link = *state;
        }
        Step::Hold => each_link(devices, &broker_hosts, |d, b| sim.hold(d, b)),
        Step::Release => each_link(devices, &broker_hosts, |d, b| sim.release(d, b)),
        Step::Healed(since) => world.lock().rec.heals.push((*since, now)),
        Step::Latency(l, j) => {
            each_link(devices, &broker_hosts, |d, b| {
                sim.set_link_latency(d, b, Duration::from_millis(*l));
                sim.set_link_max_message_latency(d, b, Duration::from_millis(l + j));
            });
        }
        Step::BrokerCrash { persist, broker } => brokers[*broker].crash(*persist),
        Step::BrokerBounce { broker } => brokers[*broker].restart(),
        Step::DropAcks(kind, n) => broker.knobs(|k| *k.drop.entry(*kind).or_insert(0) += n),
        Step::DelayAcks(kind, n, late) => {
            broker.knobs(|k| k.delay.insert(*kind, (*n, *late)));
        }
        Step::Refuse(code) => broker.knobs(|k| k.refuse_code = *code),
        Step::StopPings(stop) => broker.knobs(|k| k.stop_pings = *stop),
        Step::Partition => each_link(devices, &broker_hosts, |d, b| sim.partition(d, b)),
        Step::Repair => each_link(devices, &broker_hosts, |d, b| sim.repair(d, b)),
        Step::DeviceCrash => {
            devices.iter().for_each(|d| sim.crash(d.as_str()));
            let mut w = world.lock();
            w.rec.power_cycles.push(now);
            // What was not synced is gone with the power.
            w.flash.iter_mut().flatten().for_each(FlashCell::power_off);
        }
        Step::DeviceBounce => {
            world.lock().flash.iter_mut().flatten().for_each(FlashCell::power_on);
            // Without a store the booting client has forgotten its packet ids with its RAM
            // (also when overlapping power faults boot it twice); the brokers must not hold
            // reusing them against it. Nothing reaches them from a device that is off, so
            // forgetting at the boot is enough.
            if world.lock().flash.iter().all(Option::is_none) {
                brokers.iter().for_each(Broker::devices_forgot);
            }
            devices.iter().for_each(|d| sim.bounce(d.as_str()));
        }
        Step::ArmCut(during) => world.lock().flash.iter_mut().flatten().for_each(|f| f.arm(*during)),
        Step::Dns(fail) => world.lock().dns_fail = *fail,
        Step::ServerDisconnect(reason) => broker.server_disconnect(*reason),
        Step::AppDisconnect => world.lock().disconnect_now.iter_mut().for_each(|d| *d = true),
        Step::GuestTrap => world.lock().trap_now.iter_mut().for_each(|d| *d = true),
        Step::App(filter, qos) => {
            let mut w = world.lock();
            for (i, reqs) in w.app_requests.iter_mut().enumerate() {
                reqs.push((for_device(filter, i as u32), *qos));
            }
        }
        Step::ObserverAway(away) => {
            let mut w = world.lock();
            w.observer_away = *away;
            w.observer_wakes.iter().for_each(|o| o.notify_one());
        }
        Step::Cancel(topic) => {
            let mut w = world.lock();
            for (i, cancels) in w.app_cancels.iter_mut().enumerate() {
                cancels.push(for_device(topic, i as u32));
            }
        }
    }
    wakes.iter().for_each(|w| w.notify_one());
}

/// Every device ↔ broker link (what the device's network faults act on).
fn each_link(devices: &[String], brokers: &[String], mut f: impl FnMut(&str, &str)) {
    for d in devices {
        for b in brokers {
            f(d, b);
        }
    }
}

/// The brokers' host names: `broker`, `broker-2`, `broker-3` …
pub(crate) fn broker_names(n: usize) -> Vec<String> {
    (0..n.max(1)).map(|i| if i == 0 { BROKER.to_string() } else { format!("{BROKER}-{}", i + 1) }).collect()
}

fn check(out: &mut Vec<Check>, name: &str, passed: bool, detail: String) {
    out.push(Check { name: name.into(), passed, detail });
}

fn evaluate(sc: &Scenario, name: &str, seed: u64, rec: &Record, wills: &[String]) -> Outcome {
    let final_boot = |device: u32| rec.boots.get(device as usize).copied().unwrap_or(0).saturating_sub(1);
    let qos1: Vec<_> = rec.accepted.iter().filter(|a| a.qos >= 1).collect();
    let workload_topics: BTreeSet<&str> = rec.accepted.iter().map(|a| a.topic.as_str()).collect();
    let observed: Vec<_> = rec.observed.iter().filter(|d| workload_topics.contains(d.topic.as_str()) && d.seq.is_some()).collect();
    let seen: BTreeSet<u64> = observed.iter().filter_map(|d| d.seq).collect();
    let at_broker: BTreeSet<u64> = rec.broker_received.iter().filter_map(|d| d.seq).collect();
    let broker_dropped: BTreeMap<u64, &str> = rec.broker_dropped.iter().filter_map(|(seq, why)| Some(((*seq)?, why.as_str()))).collect();
    let acked = |a: &&crate::world::Accepted| rec.acked.contains_key(&(a.device, a.boot, a.token));
    // Missing: accepted by a client that lived on (or acknowledged) and never observed.
    // A publish that failed (its deadline passed unsent) was reported to the application: not lost.
    // Nor is one cancelled, or whose cancel a power cut fell inside (it may have taken), or
    // one a disconnect left in the store with no later boot to send it.
    let failed = |a: &&&crate::world::Accepted| {
        let key = (a.device, a.boot, a.token);
        let kept_for_no_one = rec.kept.contains(&key) && a.boot == final_boot(a.device);
        rec.failed.contains(&key) || rec.cancelled.contains(&key) || rec.cancel_cut.contains(&key) || kept_for_no_one
    };
    // With a store nothing is exempt: a publish that returned a token survives power cuts.
    let stored = sc.device.store.is_some();
    let missing: Vec<&&crate::world::Accepted> =
        qos1.iter().filter(|a| !seen.contains(&a.seq) && (stored || acked(a) || a.boot == final_boot(a.device))).filter(|a| !failed(a)).collect();
    // The broker let go of some itself (a restart without persistence, overflow, expiry):
    // not the client's loss, but reported. Everything else missing is lost.
    let (by_broker, lost): (Vec<&crate::world::Accepted>, Vec<&crate::world::Accepted>) =
        missing.iter().map(|a| **a).partition(|a| at_broker.contains(&a.seq) && broker_dropped.contains_key(&a.seq));
    let lost: Vec<u64> = lost.iter().map(|a| a.seq).collect();
    let dropped_by_broker = by_broker.len() as u64;
    let delivered = qos1.iter().filter(|a| seen.contains(&a.seq)).count() as u64;
    let qos1_seqs: BTreeSet<u64> = qos1.iter().map(|a| a.seq).collect();
    // Copies the broker sent as new messages; its own redeliveries to the observer (DUP,
    // after the observer's connection broke) are the broker's business, not the device's.
    let copies = observed.iter().filter(|d| !d.dup && d.seq.is_some_and(|s| qos1_seqs.contains(&s))).count() as u64;
    let duplicates = copies.saturating_sub(delivered);
    // Every up after a device's first is a reconnect.
    let reconnects = rec.ups.len().saturating_sub(sc.devices as usize) as u64;

    let mut checks = Vec::new();
    if !rec.host_errors.is_empty() {
        check(&mut checks, "hosts_ran", false, rec.host_errors.join("; "));
    }
    // Always checked: whatever else a scenario pins, the client must keep to the protocol.
    if !rec.protocol_violations.is_empty() {
        check(&mut checks, "no_protocol_violations", false, rec.protocol_violations[..rec.protocol_violations.len().min(5)].join("; "));
    }
    // Always checked too: an application tracking the connection from the events must be
    // able to trust them (a watchdog restart once reported a second `Up` with no `Down`).
    if !rec.up_down_out_of_turn.is_empty() {
        check(&mut checks, "up_down_alternate", false, rec.up_down_out_of_turn[..rec.up_down_out_of_turn.len().min(5)].join("; "));
    }
    // And this: a watchdog restart hands the fresh instance what the failed one held; one it
    // refused is failed to the application, which `no_qos1_loss` lets by as told.
    if rec.replays_refused > 0 {
        check(
            &mut checks,
            "restart_refuses_nothing",
            false,
            format!("{} publishes or subscriptions refused when handed back after a restart (the most on one device)", rec.replays_refused),
        );
    }
    let e = &sc.expect;
    if e.no_qos1_loss == Some(true) {
        let never_reached_broker = lost.iter().filter(|s| !at_broker.contains(s)).count();
        let mut detail = format!(
            "{} accepted, {} delivered, lost seqs {:?} ({} never reached the broker)",
            qos1.len(),
            delivered,
            &lost[..lost.len().min(10)],
            never_reached_broker
        );
        if dropped_by_broker > 0 {
            let why: BTreeSet<&str> = by_broker.iter().filter_map(|a| broker_dropped.get(&a.seq).copied()).collect();
            let _ = write!(detail, "; {dropped_by_broker} dropped by the broker itself ({})", why.into_iter().collect::<Vec<_>>().join("; "));
        }
        check(&mut checks, "no_qos1_loss", lost.is_empty(), detail);
    }
    if let Some(max) = e.max_duplicates {
        check(&mut checks, "max_duplicates", duplicates <= max, format!("{duplicates} duplicates (at most {max})"));
    }
    if e.in_order == Some(true) {
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        let mut firsts = BTreeSet::new();
        let mut bad = None;
        for d in &observed {
            let Some(seq) = d.seq else { continue };
            if !firsts.insert(seq) {
                continue;
            }
            if let Some(prev) = last.insert(d.topic.as_str(), seq)
                && seq < prev
                && bad.is_none()
            {
                bad = Some(format!("{} arrived after {} on {}", seq, prev, d.topic));
            }
        }
        check(&mut checks, "in_order", bad.is_none(), bad.unwrap_or_else(|| "first deliveries in publish order".into()));
    }
    if let Some(limit) = e.reconnect_within_ms {
        let returns: Vec<(u64, u64)> = rec.link_returns.iter().map(|t| (0, *t)).collect();
        let (ok, detail) = back_up_within(sc, rec, &returns, limit, "the link returned");
        check(&mut checks, "reconnect_within_ms", ok, detail);
    }
    if let Some(limit) = e.recover_within_ms {
        let (ok, detail) = back_up_within(sc, rec, &rec.heals, limit, "the network healed");
        check(&mut checks, "recover_within_ms", ok, detail);
    }
    if let Some(want) = e.will_delivered {
        let by = e.will_by_s.map(ms).unwrap_or(u64::MAX);
        let got: Vec<&str> = wills.iter().filter(|w| rec.observed.iter().any(|d| d.topic == **w && d.t_ms <= by)).map(String::as_str).collect();
        let ok = if want { !wills.is_empty() && got.len() == wills.len() } else { got.is_empty() };
        check(&mut checks, "will_delivered", ok, format!("wills delivered on {got:?} of {wills:?}"));
    }
    let injected_qos1: Vec<u64> = rec.injected.iter().map(|(s, _, _)| *s).collect();
    // A message the client was handing over in the call a power cut fell inside counts as
    // received: it was in the application's hands when the power failed. (Exactly once
    // cannot cover that instant both ways: the client records a QoS 2 id before handing the
    // message over, so if the record survived the cut the broker's resend is not delivered
    // again; never twice, at the cost of this one.)
    let received: BTreeSet<u64> = rec.device_received.iter().filter_map(|d| d.seq).chain(rec.handed_over_at_cut.iter().copied()).collect();
    if e.device_receives_all == Some(true) {
        let missing: Vec<u64> = injected_qos1.iter().copied().filter(|s| !received.contains(s)).collect();
        check(
            &mut checks,
            "device_receives_all",
            missing.is_empty() && !injected_qos1.is_empty(),
            format!("{} injected, missing {:?}", injected_qos1.len(), &missing[..missing.len().min(10)]),
        );
    }
    if let Some(want_none) = e.device_receives_none_while_away {
        // Injected between a down and the next up.
        let away: Vec<u64> = rec
            .injected
            .iter()
            .filter(|(_, t, _)| {
                rec.downs.iter().any(|(_, d, _)| d <= t)
                    && rec.ups.iter().filter(|(_, u)| u <= t).count() <= rec.downs.iter().filter(|(_, d, _)| d <= t).count()
            })
            .map(|(s, _, _)| *s)
            .collect();
        let got = away.iter().filter(|s| received.contains(s)).count();
        let ok = if want_none { got == 0 && !away.is_empty() } else { got == away.len() && !away.is_empty() };
        check(&mut checks, "device_receives_none_while_away", ok, format!("{} injected while away, {} received", away.len(), got));
    }
    if let Some(by) = e.drain_within_s {
        let late: Vec<u64> = qos1
            .iter()
            .filter(|a| a.boot == final_boot(a.device) && !failed(a))
            .filter(|a| rec.acked.get(&(a.device, a.boot, a.token)).is_none_or(|t| *t > ms(by)))
            .map(|a| a.seq)
            .collect();
        check(&mut checks, "drain_within_s", late.is_empty(), format!("{} not acknowledged by {by} s: {:?}", late.len(), &late[..late.len().min(10)]));
    }
    if let Some(min) = e.min_watchdog_restarts {
        check(&mut checks, "min_watchdog_restarts", rec.restarts >= min, format!("{} watchdog restarts (at least {min})", rec.restarts));
    }
    if let Some(min) = e.min_reconnects {
        check(&mut checks, "min_reconnects", reconnects >= min, format!("{reconnects} reconnects (at least {min})"));
    }
    if let Some(max) = e.max_reconnects {
        check(&mut checks, "max_reconnects", reconnects <= max, format!("{reconnects} reconnects (at most {max})"));
    }
    if let Some(max) = e.max_discards {
        check(&mut checks, "max_discards", rec.discards <= max, format!("{} discarded (at most {max})", rec.discards));
    }
    if let Some(min) = e.min_discards {
        check(&mut checks, "min_discards", rec.discards >= min, format!("{} discarded (at least {min})", rec.discards));
    }
    if let Some(max) = e.max_cancelled_delivered {
        let cancelled: BTreeSet<u64> = rec.accepted.iter().filter(|a| rec.cancelled.contains(&(a.device, a.boot, a.token))).map(|a| a.seq).collect();
        let delivered = cancelled.iter().filter(|s| seen.contains(s)).count() as u64;
        let completed = &rec.completed_after_cancel;
        let ok = delivered <= max && completed.is_empty();
        let detail = format!(
            "{} cancelled, {delivered} of them delivered (at most {max}), {} completed after their cancel (none may) {:?}",
            cancelled.len(),
            completed.len(),
            &completed[..completed.len().min(10)]
        );
        check(&mut checks, "max_cancelled_delivered", ok, detail);
    }
    if let Some(min) = e.min_subscribe_refusals {
        check(&mut checks, "min_subscribe_refusals", rec.subscribe_refusals >= min, format!("{} filters refused (at least {min})", rec.subscribe_refusals));
    }
    if let Some(min) = e.min_publish_failures {
        check(&mut checks, "min_publish_failures", rec.publish_failures >= min, format!("{} failed (at least {min})", rec.publish_failures));
    }
    if let Some(max) = e.max_broker_inflight_to_device {
        let got = rec.broker_max_inflight_to_device;
        check(&mut checks, "max_broker_inflight_to_device", got <= max, format!("broker had at most {got} in flight to the device (limit {max})"));
    }
    if let Some(want) = &e.down_reason {
        let hit = rec.downs.iter().find(|(_, _, why)| why.contains(want.as_str()));
        check(
            &mut checks,
            "down_reason",
            hit.is_some(),
            match hit {
                Some((_, t, why)) => format!("{why} at {t} ms"),
                None => format!("no down reason containing {want:?}; saw {:?}", rec.downs.iter().map(|d| &d.2).collect::<Vec<_>>()),
            },
        );
    }
    for topic in &e.device_receives {
        let want: Vec<u64> = rec.injected.iter().filter(|(_, _, t)| t == topic).map(|(s, _, _)| *s).collect();
        let missing: Vec<u64> = want.iter().copied().filter(|s| !received.contains(s)).collect();
        check(
            &mut checks,
            &format!("device_receives {topic}"),
            !want.is_empty() && missing.is_empty(),
            format!("{} injected, missing {:?}", want.len(), &missing[..missing.len().min(10)]),
        );
    }
    for topic in &e.device_never_receives {
        // Something must have been sent on the topic (injected, or published by a device) for
        // the check to mean anything.
        let sent = rec.injected.iter().filter(|(_, _, t)| t == topic).count() + rec.accepted.iter().filter(|a| a.topic == *topic).count();
        let got = rec.device_received.iter().filter(|d| d.topic == *topic).count();
        check(&mut checks, &format!("device_never_receives {topic}"), sent > 0 && got == 0, format!("{sent} sent on it, {got} received"));
    }
    for topic in &e.device_receives_retained {
        let got: Vec<&crate::world::Delivery> = rec.device_received.iter().filter(|d| d.topic == *topic).collect();
        let flagged = got.iter().filter(|d| d.retained).count();
        check(
            &mut checks,
            &format!("device_receives_retained {topic}"),
            !got.is_empty() && flagged == got.len(),
            format!("{flagged} of {} received with the retain flag", got.len()),
        );
    }
    if let Some(max) = e.max_connect_attempts {
        check(&mut checks, "max_connect_attempts", rec.connect_attempts <= max, format!("{} connection attempts (at most {max})", rec.connect_attempts));
    }
    if let Some(max) = e.device_max_duplicates {
        let copies = rec.device_received.iter().filter(|d| d.seq.is_some_and(|s| injected_qos1.contains(&s))).count() as u64;
        // What the application saw: a message handed over in the call a power cut fell
        // inside never reached it, so a copy after the boot is its first.
        let seen: BTreeSet<u64> = rec.device_received.iter().filter_map(|d| d.seq).filter(|s| injected_qos1.contains(s)).collect();
        let extra = copies - seen.len() as u64;
        check(&mut checks, "device_max_duplicates", extra <= max, format!("{extra} extra copies of injected messages reached the application (at most {max})"));
    }
    if e.device_receives_last_injected == Some(true) {
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for (seq, _, topic) in &rec.injected {
            last.insert(topic.as_str(), *seq);
        }
        let missing: Vec<String> = last.iter().filter(|(_, s)| !received.contains(s)).map(|(t, s)| format!("{t} seq {s}")).collect();
        check(
            &mut checks,
            "device_receives_last_injected",
            !last.is_empty() && missing.is_empty(),
            if missing.is_empty() {
                format!("the newest of {} inject stream(s) arrived", last.len())
            } else {
                format!("missing the newest: {}", missing.join(", "))
            },
        );
    }
    if let Some(min) = e.min_expired {
        check(&mut checks, "min_expired", rec.broker_expired >= min, format!("{} expired at the broker (at least {min})", rec.broker_expired));
    }
    let passed = checks.iter().all(|c| c.passed);
    Outcome {
        scenario: name.into(),
        seed,
        passed,
        qos1_published: qos1.len() as u64,
        qos1_acked: qos1.iter().filter(|a| acked(a)).count() as u64,
        qos1_delivered: delivered,
        qos1_lost: lost.len() as u64,
        broker_dropped: dropped_by_broker,
        duplicates,
        reconnects,
        watchdog_restarts: rec.restarts,
        discards: rec.discards,
        sim_seconds: 0.0,
        wall_seconds: 0.0,
        trace_hash: String::new(),
        expectations: checks,
        trace: Vec::new(),
    }
}
