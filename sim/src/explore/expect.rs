//! What must hold in a scenario, read off the scenario itself: the expectations a correct
//! client meets whatever the seed, and nothing it may legitimately miss.
//!
//! Every rule below is conservative on purpose. A rule that could fail for a correct client
//! would make `explore` report noise, so where a guarantee depends on timing (how long the
//! client takes to notice a dead link, how long its backoff runs) the bound is the worst the
//! config allows, and where it depends on something the scenario does not pin down (a
//! session the broker may have dropped, a message still in RAM at a power cut) the
//! expectation is left out. The shrinker re-derives them for every smaller scenario it tries.

use mqtt_host::Config;

use crate::runner::device_config;
use crate::scenario::{AckKind, Expect, Fault, Inject, Scenario, Workload};

use super::generate::{RETAINED_TOPIC, STALE_TOPIC};

/// What the config and the network make of time.
struct Timing {
    cfg: Config,
    /// Worst round trip, seconds (the slowest latency the scenario sets, plus jitter and a
    /// tick each way).
    rtt: f64,
    /// Best round trip, seconds: the lowest latency the scenario sets, less its jitter,
    /// each way, and no tick.
    rtt_min: f64,
    /// Response time, seconds.
    rt: f64,
    /// Seconds between pings when idle (infinite without keepalive: then nothing notices a
    /// link that went silent).
    ping: f64,
    /// Seconds from the end of a disturbance until the client is up and moving again.
    recover: f64,
}

impl Timing {
    fn of(sc: &Scenario) -> Timing {
        let cfg = device_config(sc, 1, 0);
        let mut latency = sc.network.latency_ms + sc.network.jitter_ms;
        let mut fastest = sc.network.latency_ms.saturating_sub(sc.network.jitter_ms);
        for f in &sc.fault {
            if let Fault::Latency { latency_ms, jitter_ms, .. } = f {
                latency = latency.max(latency_ms + jitter_ms);
                fastest = fastest.min(latency_ms.saturating_sub(*jitter_ms));
            }
        }
        let rtt = 2.0 * (latency + sc.tick_ms) as f64 / 1000.0;
        let rtt_min = 2.0 * fastest as f64 / 1000.0;
        let rt = f64::from(cfg.response_time_ms) / 1000.0;
        // An MQTT 5 broker's Server Keep Alive replaces the client's.
        let keepalive = match (cfg.mqttv5, sc.broker.server_keep_alive) {
            (true, Some(s)) => s,
            _ => cfg.keepalive_secs,
        };
        let ping = match (keepalive, cfg.ping_interval_secs) {
            (0, _) => f64::INFINITY,
            (_, p) if p > 0 => f64::from(p),
            (k, _) => f64::from(k) / 4.0,
        };
        // 3.1.1 republishes `max_repubs` times before it gives up on a connection; MQTT 5
        // waits as long without resending.
        let repubs = f64::from(cfg.max_repubs);
        let backoff = f64::from(cfg.backoff_max_ms) / 1000.0;
        // Without pings only an unanswered publish shows a dead link (`must_arrive` leaves
        // out what would need a ping to notice).
        let noticed = if ping.is_finite() { ping } else { 0.0 };
        let recover = backoff + rt * (repubs + 3.0) + noticed + 10.0 * rtt + 3.0;
        Timing { cfg, rtt, rtt_min, rt, ping, recover }
    }

    fn v5(&self) -> bool {
        self.cfg.mqttv5
    }
}

/// The broker that dies for good in a failover scenario.
fn for_good(sc: &Scenario, f: &Fault) -> bool {
    let fails_over = sc.brokers > 1 && sc.device.servers.as_ref().is_some_and(|s| !s.is_empty());
    fails_over && matches!(f, Fault::BrokerDown { for_s, .. } if *for_s >= 10_000.0)
}

/// When the last disturbance is over, in seconds: every fault's window, a lost or late
/// acknowledgement as late as the traffic it may hit, and chaos anywhere it may fall.
fn last_disturbance(sc: &Scenario, t: &Timing) -> f64 {
    let mut end: f64 = 0.0;
    // Lost and late acknowledgements, in seconds of recovery each, and the latest they
    // can start.
    let (mut acks, mut acks_from) = (0.0, traffic_end(sc));
    for f in &sc.fault {
        let (at, span) = f.window();
        end = end.max(match f {
            _ if for_good(sc, f) => at + t.recover,
            Fault::DropAcks { count, .. } | Fault::DelayAcks { count, .. } => {
                // Each costs a recovery, and a delayed one its delay too.
                let late = if let Fault::DelayAcks { ms, .. } = f { *ms as f64 / 1000.0 } else { 0.0 };
                acks += f64::from(*count) * (t.recover + late);
                acks_from = acks_from.max(at);
                0.0
            }
            Fault::Disconnect { .. } => 0.0,
            _ => at + span,
        });
    }
    if let Some(c) = &sc.chaos {
        end = end.max(sc.duration_s * 0.8 + c.max_down_s.max(8.0));
    }
    // A drop or a delay waits for an acknowledgement to hit: armed while the link is down
    // (or before anything is published), every one of them strikes after the other
    // disturbances are over, one after another, each costing a recovery (found by
    // `explore --seed 131`: two faults of two dropped PUBACKs each, armed before and during
    // a 40 s outage, all four struck after it).
    if acks > 0.0 {
        end = end.max(acks_from.max(end) + acks);
    }
    end
}

/// When the last workload publish and the last injected message are due.
fn traffic_end(sc: &Scenario) -> f64 {
    sc.workload.iter().map(Workload::end_s).chain(sc.inject.iter().map(Inject::end_s)).fold(0.0, f64::max)
}

/// By when every accepted QoS 1/2 publish must be acknowledged: the last disturbance or
/// publish, the slowest recovery, and the backlog through the in-flight window.
pub fn drain_deadline(sc: &Scenario) -> f64 {
    let t = Timing::of(sc);
    let c = &t.cfg;
    let published: u64 = sc.workload.iter().map(|w| w.count).sum();
    let backlog = published.min(u64::from(c.max_queued)) as f64;
    let window = send_window(sc, &t);
    let qos2 = if sc.workload.iter().any(|w| w.qos == 2) { 2.0 } else { 1.0 };
    let mut held = 0.0;
    if let Some(every) = sc.device.app_take_every_ms {
        // With backpressure a slow application holds the connection's input back, the
        // acknowledgements queued behind the messages it has not taken included.
        let injected: u64 = sc.inject.iter().map(|i| i.count).sum();
        held = injected as f64 / f64::from(c.queue_len.max(1)) * every as f64 / 1000.0 + every as f64 / 1000.0;
    }
    let end = last_disturbance(sc, &t).max(traffic_end(sc));
    end + t.recover + backlog / f64::from(window) * t.rtt * qos2 + held + 5.0
}

/// A time after which nothing the scenario does is still settling (where the generator puts
/// an application's `disconnect`).
pub fn quiet_after(sc: &Scenario) -> f64 {
    drain_deadline(sc).ceil() + 5.0
}

/// Whether the device can connect at all: a broker that demands enhanced authentication
/// gets it, with the right secret. (The generator always matches them; a shrink step that
/// breaks the match would fail everything for a reason that is not the client's.)
pub fn coherent(sc: &Scenario) -> bool {
    let device_method = sc.device.auth_method.clone().flatten();
    sc.broker.auth_method.is_none() || (sc.broker.auth_method == device_method && sc.broker.auth_secret == sc.device.auth_secret)
}

/// The expectations a correct client meets in `sc`.
pub fn derive(sc: &Scenario) -> Expect {
    let t = Timing::of(sc);
    let mut e = Expect::default();
    let total = sc.duration_s + sc.drain_s;
    let disconnect_at = sc.fault.iter().find_map(|f| if let Fault::Disconnect { at_s } = f { Some(*at_s) } else { None });
    let deadline = drain_deadline(sc);
    // The application's `disconnect` ends what the run can show, unless a later boot picks
    // up what it kept on flash.
    let settled = disconnect_at.is_none_or(|d| d >= deadline || boots_after(sc, d));
    // Only a run that outlasts the drain deadline can show what every publish came to.
    let drains = deadline + 1.0 <= total;

    // The documented cost of `clean_init = false` without a store: after a reboot the
    // client resumes a session whose QoS 2 packet ids it has forgotten, and a broker still
    // waiting for the PUBREL of one takes a new message under that id for a resend of the
    // old one (protocol/README.md, "Resuming a session without a store").
    let stateless_resume = sc.workload.iter().any(|w| w.qos == 2) && client_starts_over(sc) && sc.device.store.is_none() && !t.cfg.clean_init;
    // A broker still out of reach when the run ends (and none to fail over to) keeps what
    // it never got.
    let mut stranded = sc.fault.iter().any(|f| {
        let (at, span) = f.window();
        !for_good(sc, f) && !matches!(f, Fault::DropAcks { .. } | Fault::DelayAcks { .. }) && at + span + t.recover > total
    });
    // A broker that dies for good takes along what it acknowledged but had not passed on
    // yet: only a broker that keeps up with the traffic has nothing left then.
    let rate: f64 = sc.workload.iter().map(|w| 1000.0 / w.every_ms as f64).sum::<f64>() + sc.inject.iter().map(|i| 1000.0 / i.every_ms as f64).sum::<f64>();
    let keeps_up = rate * 4.0 * t.rtt < f64::from(sc.broker.receive_maximum);
    // Nor does one whose observer is away (it queues for it) before it dies.
    let observer_away = sc.fault.iter().any(|f| matches!(f, Fault::ObserverAway { .. }));
    if sc.fault.iter().any(|f| for_good(sc, f)) && (!keeps_up || observer_away) {
        stranded = true;
    }
    // (And only a run long enough to drain can show that nothing was lost.)
    if sc.workload.iter().any(|w| w.qos >= 1) && settled && !stateless_resume && !stranded && drains {
        e.no_qos1_loss = Some(true);
        // A broker that drops a message from a full queue delivers the client's resend of it
        // later, out of order: nothing the client did.
        let sent: u64 = sc.workload.iter().map(|w| w.count).sum::<u64>() + sc.inject.iter().map(|i| i.count).sum::<u64>();
        // And one that restarts without its sessions loses the observer's subscription until
        // the observer is back: what the device resends meanwhile reaches nobody, and only a
        // later resend of it is seen.
        let sessions_lost = !sc.broker.persist_sessions || sc.fault.iter().any(|f| matches!(f, Fault::BrokerRestart { persist: false, .. }));
        // And one whose copy expired in the queue of an absent observer may reach it later
        // through a resend the broker takes as new (after a restart forgot the QoS 2 id).
        // The observer is away when told to go, and while a broker outage keeps it off
        // (its reconnect may then lag the device's by a slow CONNACK).
        let observer_absent =
            sc.fault.iter().any(|f| matches!(f, Fault::ObserverAway { .. } | Fault::BrokerRestart { .. } | Fault::BrokerDown { .. } | Fault::HalfOpen { .. }));
        let expiring = observer_absent && sc.workload.iter().any(|w| w.message_expiry_s.is_some());
        if sc.broker.max_queued_messages as u64 >= sent && !sessions_lost && !expiring {
            e.in_order = Some(true);
        }
        e.max_duplicates = Some(if outgoing_exactly_once(sc, &t) { 0 } else { duplicate_bound(sc, &t) });
        e.drain_within_s = Some(deadline.ceil());
    }
    e.max_reconnects = Some(reconnect_bound(sc, &t));
    e.max_connect_attempts = Some(attempt_bound(sc, &t));
    if let Some(limit) = reconnect_limit(sc, &t) {
        e.reconnect_within_ms = Some(limit);
    }
    e.recover_within_ms = recover_limit(sc, &t);
    will(sc, &t, &mut e);
    incoming(sc, &t, &mut e, disconnect_at);
    access_control(sc, &t, &mut e, disconnect_at, drains);
    if outgoing_expiry_must_drop(sc, &t) {
        e.min_expired = Some(1);
    }
    if sc.fault.iter().any(|f| matches!(f, Fault::Cancel { .. })) {
        // What had been sent by the cancel may still arrive: at most a window in flight, and
        // what earlier disturbances put back in the queue after sending it.
        let window = u64::from(t.cfg.max_inflight.max(1));
        e.max_cancelled_delivered = Some((duplicate_bound(sc, &t) + window) * u64::from(sc.devices));
    }
    if let Some(r) = server_disconnect(sc, &t) {
        e.down_reason = Some(format!("ServerDisconnect({r})"));
    }
    if deadline_must_fail(sc) {
        e.min_publish_failures = Some(1);
    }
    e
}

/// Whether the device boots again after the application's `disconnect` at `at`, with a store
/// to keep what was unacknowledged for that boot (`disconnect` hands it over as kept and the
/// next boot sends it: scenarios/disconnect-keeps-stored-publishes.toml). Without a store
/// `disconnect` fails those publishes, and nothing is owed after it.
///
/// Only when the device is up at `at`: one that is off then (inside a power fault's window,
/// or at a chaos power cut's mercy) disconnects when it boots, which may be the last boot
/// (found by `explore --seed 307`: a disconnect due while a power cut had the device off,
/// carried out at the boot after the power cycle that followed).
fn boots_after(sc: &Scenario, at: f64) -> bool {
    // Up again a few seconds after a power fault's window: booted and connected.
    let off_at = |f: &Fault| {
        let (from, span) = f.window();
        restarts_client(f) && from <= at && at <= from + span + 5.0
    };
    let cuts = sc.chaos.as_ref().is_some_and(|c| c.power_cuts > 0);
    sc.device.store.is_some() && !cuts && !sc.fault.iter().any(off_at) && sc.fault.iter().any(|f| matches!(*f, Fault::PowerCycle { at_s, .. } if at_s > at))
}

/// The application's `disconnect` before something else happens: the device is then off
/// the broker however the rules that follow read the rest of the scenario (a link or a
/// broker that heals finds it not trying, a power cycle finds no connection to cut).
fn disconnects_midway(sc: &Scenario) -> bool {
    sc.fault.iter().any(|f| matches!(*f, Fault::Disconnect { at_s } if sc.fault.iter().any(|g| !aside(g) && g.window().0 > at_s)))
}

/// A fault only a ping (or an unanswered publish) reveals to the client.
fn silent(f: &Fault) -> bool {
    matches!(f, Fault::SilentLink { .. } | Fault::HalfOpen { .. } | Fault::BrokerRestart { .. } | Fault::BrokerDown { .. } | Fault::Latency { .. })
}

/// An application's own request (subscribe, unsubscribe, cancel) or the observer's absence:
/// nothing that disturbs the device's connection.
fn aside(f: &Fault) -> bool {
    matches!(f, Fault::Subscribe { .. } | Fault::Unsubscribe { .. } | Fault::Cancel { .. } | Fault::ObserverAway { .. })
}

/// A fault after which the client starts over from nothing but its store: a power cycle or
/// cut, or a watchdog restart of the component (`guest_trap`). The host keeps what a
/// restart's application would have lost (the publishes not yet acknowledged, the
/// subscriptions), but the fresh instance has forgotten its packet ids and its session,
/// and connects as a first connection does (`clean_init`); reading a restart as a reboot
/// leaves out only expectations, never adds one.
fn restarts_client(f: &Fault) -> bool {
    matches!(f, Fault::PowerCycle { .. } | Fault::PowerCut { .. } | Fault::GuestTrap { .. })
}

/// Whether the client starts over at some point (see [`restarts_client`]), chaos included.
fn client_starts_over(sc: &Scenario) -> bool {
    sc.fault.iter().any(restarts_client) || sc.chaos.as_ref().is_some_and(|c| c.power_cuts > 0)
}

/// The broker keeps the device's session through everything the scenario does.
fn session_kept(sc: &Scenario, t: &Timing) -> bool {
    let c = &t.cfg;
    !c.clean
        && sc.broker.persist_sessions
        && sc.brokers == 1
        && !sc.fault.iter().any(|f| matches!(f, Fault::BrokerRestart { persist: false, .. }))
        && (!c.mqttv5 || c.session_expiry_secs >= 3600)
        && (!client_starts_over(sc) || !c.clean_init)
}

/// Outgoing QoS 2 reaches the other side once: every QoS 1/2 workload is QoS 2 and the
/// broker never loses the session that remembers what it already has.
fn outgoing_exactly_once(sc: &Scenario, t: &Timing) -> bool {
    sc.workload.iter().filter(|w| w.qos >= 1).all(|w| w.qos == 2) && session_kept(sc, t) && sc.chaos.is_none()
}

/// Copies of a message the broker may see again: each disturbance can resend the whole
/// in-flight window (3.1.1 also republishes it `max_repubs` times on a slow answer).
fn duplicate_bound(sc: &Scenario, t: &Timing) -> u64 {
    let window = u64::from(t.cfg.max_inflight.max(1));
    let repubs = if t.v5() { 0 } else { u64::from(t.cfg.max_repubs) };
    // Latency past the response time times out one answer after another while it lasts.
    let slow: f64 = sc.fault.iter().map(|f| if let Fault::Latency { for_s, .. } = f { for_s / t.rt } else { 0.0 }).sum();
    let events = disturbances(sc) + 1 + slow.ceil() as u64;
    window * (repubs + 1) * events * u64::from(sc.devices)
}

/// How many separate disturbances the scenario holds (a flap counts each drop).
fn disturbances(sc: &Scenario) -> u64 {
    let mut n = 0u64;
    for f in &sc.fault {
        n += match f {
            Fault::LinkFlap { count, .. } | Fault::DropAcks { count, .. } | Fault::DelayAcks { count, .. } => u64::from(*count),
            _ if aside(f) || matches!(f, Fault::Disconnect { .. }) => 0,
            _ => 1,
        };
    }
    if let Some(c) = &sc.chaos {
        n += u64::from(c.link_drops + c.broker_restarts + c.power_cuts);
    }
    n
}

/// Most reconnections a correct client makes: a couple per disturbance, and one per
/// unanswered ping or answer while pings go unanswered or answers come too late.
fn reconnect_bound(sc: &Scenario, t: &Timing) -> u64 {
    let mut n = 1.0;
    for f in &sc.fault {
        n += match *f {
            Fault::LinkFlap { count, .. } | Fault::DropAcks { count, .. } | Fault::DelayAcks { count, .. } => 2.0 * f64::from(count),
            Fault::StopPings { for_s, .. } => 2.0 + for_s / t.ping.max(0.5),
            Fault::Latency { for_s, .. } => 2.0 + for_s / t.rt,
            _ if aside(f) => 1.0,
            Fault::Disconnect { .. } => 0.0,
            _ => 2.0,
        };
    }
    if let Some(c) = &sc.chaos {
        n += 2.0 * f64::from(c.link_drops + c.broker_restarts + c.power_cuts);
    }
    (n.ceil() as u64) * u64::from(sc.devices)
}

/// Most connection attempts a client with backoff makes: inside a window where connecting
/// fails, one per half of the longest backoff after the doublings, a few per other
/// disturbance; every broker in turn when there are several.
fn attempt_bound(sc: &Scenario, t: &Timing) -> u64 {
    let c = &t.cfg;
    let floor = f64::from(c.backoff_max_ms) / 2000.0;
    let growth = (f64::from(c.backoff_max_ms) / f64::from(c.backoff_min_ms.max(1))).log2().ceil() + 1.0;
    let failing = |window: f64, floor: f64| window / floor + growth + 4.0;
    // A broker that does not answer (silence, nothing listening) is probed at least every
    // half probe (the backoff's jitter), not at the backoff's pace.
    let probe = probe_s(t).min(f64::from(c.backoff_max_ms) / 1000.0) / 2.0;
    let mut n = 4.0;
    for f in &sc.fault {
        let (_, span) = f.window();
        n += match *f {
            _ if for_good(sc, f) => 4.0,
            Fault::Refuse { .. } | Fault::DnsFailure { .. } => failing(span, floor),
            Fault::BrokerDown { .. } | Fault::BrokerRestart { .. } | Fault::SilentLink { .. } | Fault::HalfOpen { .. } => failing(span, probe),
            Fault::Latency { for_s, .. } => failing(for_s, probe),
            Fault::StopPings { for_s, .. } => 3.0 + for_s / t.ping.max(0.5),
            Fault::LinkFlap { count, .. } | Fault::DropAcks { count, .. } | Fault::DelayAcks { count, .. } => 3.0 * f64::from(count),
            Fault::PowerCycle { .. } | Fault::PowerCut { .. } | Fault::GuestTrap { .. } => 5.0,
            _ if aside(f) || matches!(f, Fault::Disconnect { .. }) => 1.0,
            _ => 3.0,
        };
    }
    if let Some(ch) = &sc.chaos {
        n += 3.0 * f64::from(ch.link_drops) + f64::from(ch.broker_restarts) * failing(6.0, probe) + 5.0 * f64::from(ch.power_cuts);
    }
    (n.ceil() as u64) * u64::from(sc.brokers) * u64::from(sc.devices)
}

/// The client's probe for a broker that does not answer, seconds (`mqtt_protocol::PROBE_MS`,
/// raised to `backoff_min_ms`).
fn probe_s(t: &Timing) -> f64 {
    (mqtt_protocol::PROBE_MS as f64).max(f64::from(t.cfg.backoff_min_ms)) / 1000.0
}

/// How soon a device is up again after a silent link or a broker outage ends, where nothing
/// else stands in the way. The client probes a broker that does not answer: a fresh open
/// each probe (or four times a slow path's open, within the response time) when nothing
/// comes back, a retry within the probe when nothing listens. So its next attempt comes at
/// most that long after the heal and a few round trips later it is up. Left out with chaos,
/// several brokers, a lost or late CONNACK, another fault near, or an outage long enough
/// that the client may have used its fast probes up (`mqtt_protocol::FAST_PROBES` in a row,
/// at least 0.4 s apart: 10 s stays well inside).
fn recover_limit(sc: &Scenario, t: &Timing) -> Option<u64> {
    if sc.brokers > 1 || sc.chaos.is_some() || disconnects_midway(sc) {
        return None;
    }
    let c = &t.cfg;
    let open_wait = t.rt.min(probe_s(t).max(4.0 * t.rtt));
    let retry = probe_s(t).min(f64::from(c.backoff_max_ms) / 1000.0);
    // SYN, CONNECT and CONNACK, an enhanced-authentication round, and a tick's slack.
    let limit = open_wait.max(retry) + 6.0 * t.rtt + 0.3;
    let heals = |f: &Fault| matches!(f, Fault::SilentLink { .. } | Fault::BrokerRestart { .. } | Fault::BrokerDown { .. });
    let mut any = false;
    for (i, f) in sc.fault.iter().enumerate() {
        if !heals(f) {
            continue;
        }
        let (at, span) = f.window();
        if span > 10.0 || for_good(sc, f) {
            return None;
        }
        let end = at + span;
        for (j, g) in sc.fault.iter().enumerate() {
            if i == j || aside(g) {
                continue;
            }
            if matches!(g, Fault::DropAcks { packet: AckKind::Connack, .. } | Fault::DelayAcks { packet: AckKind::Connack, .. }) {
                return None;
            }
            // Settled before this outage began, or not begun until the device is back.
            let (gat, gspan) = g.window();
            if gat <= end + limit + 0.5 && gat + gspan + t.recover >= at {
                return None;
            }
        }
        any = true;
    }
    any.then(|| (limit * 1000.0).ceil() as u64)
}

/// When the link comes back (WiFi reports up again).
fn link_returns(sc: &Scenario) -> Vec<f64> {
    link_downs(sc).into_iter().map(|(_, up)| up).collect()
}

fn is_link_fault(f: &Fault) -> bool {
    matches!(f, Fault::LinkDown { .. } | Fault::Roam { .. } | Fault::LinkFlap { .. })
}

/// The reconnect deadline after every link return, when nothing else stands in the way of
/// reconnecting at once: no other fault near the return, no lost or late CONNACK, one
/// broker, and the link stays up long enough to tell.
fn reconnect_limit(sc: &Scenario, t: &Timing) -> Option<u64> {
    let returns = link_returns(sc);
    if returns.is_empty() || sc.brokers > 1 || sc.chaos.is_some() {
        return None;
    }
    let base_rtt = 2.0 * (sc.network.latency_ms + sc.network.jitter_ms + sc.tick_ms) as f64 / 1000.0;
    let held = sc.device.app_take_every_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
    let limit = 1.0 + 8.0 * base_rtt + held;
    for f in &sc.fault {
        if is_link_fault(f) || aside(f) {
            continue;
        }
        let (at, span) = f.window();
        if matches!(f, Fault::DropAcks { packet: AckKind::Connack, .. } | Fault::DelayAcks { packet: AckKind::Connack, .. } | Fault::Disconnect { .. }) {
            if returns.iter().any(|r| *r + limit >= at) {
                return None;
            }
            continue;
        }
        let (from, to) = (at, at + span + t.recover);
        if returns.iter().any(|r| *r + limit + 0.5 >= from && *r - 0.1 <= to) {
            return None;
        }
    }
    // A device that boots while the link is down fails its first connect; the application
    // tries again on its own schedule (as an mqtt_as application must), not at the return.
    // So does a component restarted then, its host standing in for the application.
    for f in sc.fault.iter().filter(|f| restarts_client(f)) {
        let (at, span) = f.window();
        let boot = at + span;
        if link_downs(sc).iter().any(|(d, r)| *d <= boot + t.recover && *r >= at) {
            return None;
        }
        // Likewise a boot into a broker that refuses, is down or cannot be resolved.
        let fails_first_connect = |g: &Fault| {
            let (from, len) = g.window();
            matches!(
                g,
                Fault::Refuse { .. }
                    | Fault::BrokerDown { .. }
                    | Fault::BrokerRestart { .. }
                    | Fault::DnsFailure { .. }
                    | Fault::SilentLink { .. }
                    | Fault::HalfOpen { .. }
            ) && from <= boot + t.recover
                && from + len >= boot
        };
        if sc.fault.iter().any(fails_first_connect) {
            return None;
        }
    }
    // A drop starting again before the limit would hide the reconnect.
    let downs: Vec<f64> = link_downs(sc).into_iter().map(|(down, _)| down).collect();
    if returns.iter().any(|r| downs.iter().any(|d| *d >= *r && *d <= r + limit + 0.5)) {
        return None;
    }
    Some((limit * 1000.0).ceil() as u64)
}

/// When the link is actually down, as (down, up): the runner's timeline raises it again at
/// the end of any outage, even one that overlaps another still running.
fn link_downs(sc: &Scenario) -> Vec<(f64, f64)> {
    // In whole milliseconds, as the runner's timeline has them (7.9 + 0.3 must equal 8.2).
    let ms = |s: f64| (s * 1000.0).round() / 1000.0;
    let mut edges: Vec<(f64, bool)> = Vec::new();
    for f in &sc.fault {
        for d in link_down_starts(f) {
            edges.extend([(ms(d), false), (ms(d + link_outage(f)), true)]);
        }
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut down_since, mut out) = (None, Vec::new());
    for (at, to_up) in edges {
        match (to_up, down_since) {
            (false, None) => down_since = Some(at),
            (true, Some(from)) => {
                out.push((from, at));
                down_since = None;
            }
            _ => {}
        }
    }
    out
}

fn link_down_starts(f: &Fault) -> Vec<f64> {
    match *f {
        Fault::LinkDown { at_s, .. } | Fault::Roam { at_s, .. } => vec![at_s],
        Fault::LinkFlap { at_s, count, down_s, up_s } => (0..count).map(|i| at_s + f64::from(i) * (down_s + up_s)).collect(),
        _ => Vec::new(),
    }
}

/// The last will: never sent when nothing breaks the connection (or, in MQTT 5, when the
/// device is back within the will delay); sent after a power cut long enough for the
/// broker's keepalive to notice and the delay to run out.
fn will(sc: &Scenario, t: &Timing, e: &mut Expect) {
    let Some(will) = &sc.device.will else { return };
    if sc.chaos.is_some() || sc.brokers > 1 {
        return;
    }
    // A power cut after a clean DISCONNECT has no connection to break, and no will to send.
    if disconnects_midway(sc) {
        return;
    }
    let delay = if t.v5() { f64::from(will.delay_s.unwrap_or(0)) } else { 0.0 };
    let harmless = |f: &Fault| aside(f) || matches!(f, Fault::Disconnect { .. });
    if sc.fault.iter().all(harmless) {
        e.will_delivered = Some(false);
        return;
    }
    if delay > 0.0 && sc.fault.iter().all(|f| harmless(f) || is_link_fault(f)) {
        if let Some(limit) = reconnect_limit(sc, t) {
            let longest = sc.fault.iter().map(link_outage).fold(0.0, f64::max);
            if longest + limit as f64 / 1000.0 + 2.0 < delay {
                e.will_delivered = Some(false);
            }
        }
        return;
    }
    // A power cut as the first disturbance, with the broker up until the will is due.
    let ka = match (t.v5(), sc.broker.server_keep_alive) {
        (true, Some(s)) => f64::from(s),
        _ => f64::from(t.cfg.keepalive_secs),
    };
    if ka == 0.0 {
        return;
    }
    let Some((i, first)) = sc.fault.iter().enumerate().filter(|(_, f)| !harmless(f)).min_by(|a, b| a.1.window().0.total_cmp(&b.1.window().0)) else { return };
    let (silent_from, off) = match *first {
        Fault::PowerCycle { at_s, off_s } => (at_s, off_s),
        Fault::PowerCut { at_s, off_s, within_s, .. } => (at_s + within_s, off_s),
        _ => return,
    };
    let sent = silent_from + 1.5 * ka + delay;
    let due = sent + observer_backlog_s(sc, sent, silent_from) + 2.0 * t.rtt + 1.0;
    if !alone(sc, first) || first.window().0 < 2.0 || off < 1.5 * ka + delay + 3.0 || due + 1.0 > sc.duration_s + sc.drain_s {
        return;
    }
    // Who may miss the will when one of these comes before it is due: the broker dies or
    // half-opens (it may forget the session, will and all), or the observer is away (it sees
    // the will only when back). Faults at the broker act on the observer's connection as on
    // the device's: it may lose it (answers dropped or late, pings unanswered, a DISCONNECT)
    // and not get it back (refused) before the will.
    let unseen = sc.fault.iter().enumerate().any(|(j, f)| {
        j != i
            && f.window().0 <= due
            && matches!(
                f,
                Fault::BrokerRestart { .. }
                    | Fault::BrokerDown { .. }
                    | Fault::HalfOpen { .. }
                    | Fault::ObserverAway { .. }
                    | Fault::DropAcks { .. }
                    | Fault::DelayAcks { .. }
                    | Fault::StopPings { .. }
                    | Fault::ServerDisconnect { .. }
                    | Fault::Refuse { .. }
            )
    });
    if !unseen {
        e.will_delivered = Some(true);
        e.will_by_s = Some(due.ceil());
    }
}

/// The longest the observer may take to receive what the broker queued for it ahead of a
/// message it sends at `at`: every message published by then (injected ones, and the
/// device's up to `device_until`), one after another through the broker's in-flight window
/// to it, each exchange a packet a tick (the observer is on the broker's host): four for
/// QoS 2, two for QoS 1. Found by `explore --seed 139`: a will sent 4.5 s late, behind a
/// QoS 2 stream injected at 50 a second that a window of 2 delivered at 25.
fn observer_backlog_s(sc: &Scenario, at: f64, device_until: f64) -> f64 {
    let published = |start_s: f64, every_ms: u64, count: u64, until: f64| -> u64 {
        if until < start_s {
            return 0;
        }
        count.min(((until - start_s) * 1000.0 / every_ms as f64) as u64 + 1)
    };
    let exchange = |qos: u8| {
        f64::from(match qos {
            2 => 4u32,
            1 => 2,
            _ => 0,
        })
    };
    let injected = sc.inject.iter().map(|i| published(i.start_s, i.every_ms, i.count, at) as f64 * exchange(i.qos));
    let device = sc.workload.iter().map(|w| published(w.start_s, w.every_ms, w.count, device_until) as f64 * exchange(w.qos));
    let packets: f64 = injected.chain(device).sum();
    packets * sc.tick_ms as f64 / 1000.0 / f64::from(sc.broker.receive_maximum.max(1))
}

fn link_outage(f: &Fault) -> f64 {
    match *f {
        Fault::LinkDown { for_s, .. } => for_s,
        Fault::Roam { gap_ms, .. } => gap_ms as f64 / 1000.0,
        Fault::LinkFlap { down_s, .. } => down_s,
        _ => 0.0,
    }
}

/// The QoS a stream reaches the device with (0 when nothing subscribes to it), and when
/// the subscription is made (0: at start-up).
fn delivery(sc: &Scenario, topic: &str) -> (u8, f64) {
    if let Some(s) = sc.device.subscribe.iter().find(|s| s.filter == topic) {
        return (s.qos, 0.0);
    }
    sc.fault
        .iter()
        .find_map(|f| match f {
            Fault::Subscribe { at_s, filter, qos } if filter == topic => Some((*qos, *at_s)),
            _ => None,
        })
        .unwrap_or((0, 0.0))
}

/// Whether every message of `stream` must reach the device's application.
fn must_arrive(sc: &Scenario, t: &Timing, stream: &Inject, disconnect_at: Option<f64>, backpressure_needed: bool) -> bool {
    let (qos, subscribed_at) = delivery(sc, &stream.topic);
    let end = stream.end_s();
    // Delivery keeps up with the stream only as far as the window to the device and the
    // application allow: all streams share them.
    let injected: u64 = sc.inject.iter().map(|i| i.count).sum();
    let window = if t.v5() { sc.broker.receive_maximum.min(t.cfg.receive_maximum) } else { sc.broker.receive_maximum }.max(1);
    let mut catch_up = injected as f64 * t.rtt * 2.0 / f64::from(window);
    if let Some(every) = sc.device.app_take_every_ms {
        // Each take gets what waits in the client: `queue_len` at most, and no more than the
        // broker's window, which it refills only as the application takes (a message is
        // acknowledged when handed over).
        let per_take = t.cfg.queue_len.min(u32::from(window)).max(1);
        catch_up += (injected as f64 / f64::from(per_take) + 1.0) * every as f64 / 1000.0;
    }
    // Delivery stops while the device is away: a disturbance that starts before the stream
    // is caught up pushes that back by its length, and each after the first by a reconnect
    // too (the check below allows for one). Found by explore: a 40 s outage in the middle
    // of a QoS 2 backlog that the broker sent one at a time (receive maximum 1).
    let mut end = end.max(stream.start_s + catch_up);
    let mut away: Vec<(f64, f64)> = sc.fault.iter().filter(|f| !aside(f)).map(Fault::window).collect();
    away.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut reconnects = 0.0;
    for (at, span) in away {
        if at < end {
            end += span + reconnects;
            reconnects = t.recover;
        }
    }
    let total = sc.duration_s + sc.drain_s;
    let silent_kinds = sc.fault.iter().any(silent);
    if qos == 0
        || stream.qos == 0
        || stream.message_expiry_s.is_some()
        || stream.topic == STALE_TOPIC
        || stream.topic == RETAINED_TOPIC
        || sc.brokers > 1
        || sc.chaos.is_some()
        || (backpressure_needed && !t.cfg.backpressure)
        || (silent_kinds && t.ping.is_infinite())
        || sc.fault.iter().any(|f| matches!(f, Fault::Unsubscribe { filter, .. } if *filter == stream.topic))
        || end + t.recover + 2.0 > disconnect_at.unwrap_or(f64::INFINITY).min(total)
    {
        return false;
    }
    let t_end = last_disturbance(sc, t);
    let late_sub = subscribed_at > 0.0;
    let starts_over = client_starts_over(sc);
    // After everything: the client is back and subscribed (again) by then.
    let late = stream.start_s >= t_end + t.recover
        && stream.start_s >= subscribed_at + t.recover
        && (t.cfg.resubscribe || session_kept(sc, t))
        && !(late_sub && starts_over);
    // Through everything: the broker keeps the session and queues for the device.
    // A broker queue that overflows drops messages (online sessions too, as Mosquitto's).
    if (sc.broker.max_queued_messages as u64) < injected {
        return false;
    }
    // A restart or a reboot included: what the failed instance held had not been
    // acknowledged (a message is, only once the application has it), so the broker resends
    // it to the session the fresh instance resumes (`session_kept` asks for `clean_init`
    // false then).
    let through = session_kept(sc, t) && !late_sub && stream.start_s >= 2.0;
    late || through
}

/// Expectations on what the device receives.
fn incoming(sc: &Scenario, t: &Timing, e: &mut Expect, disconnect_at: Option<f64>) {
    if sc.inject.is_empty() {
        return;
    }
    if t.cfg.backpressure {
        e.max_discards = Some(0);
    }
    let mut topics: Vec<&str> = Vec::new();
    for i in &sc.inject {
        if !topics.contains(&i.topic.as_str()) {
            topics.push(&i.topic);
        }
    }
    for topic in &topics {
        let streams: Vec<&Inject> = sc.inject.iter().filter(|i| i.topic == *topic).collect();
        if streams.iter().all(|s| must_arrive(sc, t, s, disconnect_at, true)) {
            e.device_receives.push((*topic).to_string());
            let rap = sc.device.subscribe.iter().any(|s| s.filter == *topic && s.retain_as_published);
            if t.v5() && rap && streams.iter().all(|s| s.retain) {
                e.device_receives_retained.push((*topic).to_string());
            }
        }
    }
    // Discard-oldest keeps the newest message (of the one stream: a later stream's messages
    // push an earlier stream's newest out).
    if !t.cfg.backpressure && topics.len() == 1 && sc.inject.iter().all(|s| must_arrive(sc, t, s, disconnect_at, false)) {
        e.device_receives_last_injected = Some(true);
    }
    // QoS 2 end to end reaches the application once, unless a reboot or a restart without
    // a store forgot which ids it had.
    // (A retained message comes again with every new subscription: a copy, not a duplicate.)
    let delivered: Vec<u8> = sc.inject.iter().map(|s| if s.retain { 1 } else { s.qos.min(delivery(sc, &s.topic).0) }).filter(|q| *q > 0).collect();
    let ids_remembered = sc.device.store.is_some() || !client_starts_over(sc);
    // (The check counts copies over the whole fleet: one device only.)
    if !delivered.is_empty() && delivered.iter().all(|q| *q == 2) && ids_remembered && sc.brokers == 1 && sc.devices == 1 {
        e.device_max_duplicates = Some(0);
    }
    never_receives(sc, t, e);
}

fn never_receives(sc: &Scenario, t: &Timing, e: &mut Expect) {
    let fault_subscribes = |topic: &str| sc.fault.iter().any(|f| matches!(f, Fault::Subscribe { filter, .. } if filter == topic));
    // No Local: the device's own messages never come back.
    if t.v5() && sc.devices == 1 {
        for s in sc.device.subscribe.iter().filter(|s| s.no_local) {
            // At least one of its own messages is accepted (published while the power is on).
            // (A retained one comes back on a new subscription: No Local is about forwarding.)
            // One is surely accepted: published before any fault, with room in the queue.
            let first_fault = sc.fault.iter().map(|f| f.window().0).fold(f64::INFINITY, f64::min);
            let before = |p: f64| sc.workload.iter().map(|w| w.times().filter(|t| *t <= p).count() as u64).sum::<u64>();
            let own = sc.chaos.is_none()
                && sc.workload.iter().any(|w| {
                    w.topic.replace("{device}", "0") == s.filter
                        && !w.retain
                        && w.start_s + 0.5 < first_fault
                        && w.start_s + 1.0 < sc.duration_s + sc.drain_s
                        && before(w.start_s) < u64::from(t.cfg.max_queued)
                });
            if own && !sc.inject.iter().any(|i| i.topic == s.filter) && !fault_subscribes(&s.filter) {
                e.device_never_receives.push(s.filter.clone());
            }
        }
    }
    // Retain Handling 2: the retained message from before the subscription never arrives.
    let skips_retained = sc.device.subscribe.iter().any(|s| s.filter == RETAINED_TOPIC && s.retain_handling == 2);
    let only_before = sc.inject.iter().filter(|i| i.topic == RETAINED_TOPIC).all(|i| i.start_s == 0.0 && i.count == 1);
    if t.v5() && skips_retained && only_before && sc.inject.iter().any(|i| i.topic == RETAINED_TOPIC) && !fault_subscribes(RETAINED_TOPIC) {
        e.device_never_receives.push(RETAINED_TOPIC.into());
    }
    // clean_init: what was queued while the device was off is gone at power-up.
    let stale: Vec<&Inject> = sc.inject.iter().filter(|i| i.topic == STALE_TOPIC).collect();
    if t.cfg.clean_init && !stale.is_empty() && sc.chaos.is_none() && sc.brokers == 1 && !fault_subscribes(STALE_TOPIC) {
        let inside = |i: &Inject| {
            let end = i.end_s();
            sc.fault.iter().any(|f| matches!(*f, Fault::PowerCycle { at_s, off_s } if i.start_s >= at_s + 0.5 && end <= at_s + off_s - 0.5 && alone(sc, f)))
        };
        if stale.iter().all(|i| inside(i) && i.start_s + 1.0 < sc.duration_s + sc.drain_s) {
            e.device_never_receives.push(STALE_TOPIC.into());
        }
    }
}

/// No other power fault overlaps `f`'s window (one could boot the device early).
fn alone(sc: &Scenario, f: &Fault) -> bool {
    let (at, span) = f.window();
    !sc.fault.iter().any(|g| {
        let (from, len) = g.window();
        !std::ptr::eq(f, g) && matches!(g, Fault::PowerCycle { .. } | Fault::PowerCut { .. }) && from <= at + span && from + len >= at
    })
}

/// MQTT 5: the reason of a server DISCONNECT that finds the device connected.
fn server_disconnect(sc: &Scenario, t: &Timing) -> Option<u8> {
    if !t.v5() || sc.chaos.is_some() || sc.brokers > 1 {
        return None;
    }
    let (at, reason) = sc.fault.iter().find_map(|f| if let Fault::ServerDisconnect { at_s, reason } = f { Some((*at_s, *reason)) } else { None })?;
    let clear = sc.fault.iter().all(|f| match f {
        Fault::ServerDisconnect { at_s, .. } => *at_s == at,
        _ if aside(f) => true,
        Fault::DropAcks { at_s, .. } | Fault::DelayAcks { at_s, .. } | Fault::Disconnect { at_s } => *at_s > at,
        _ => {
            let (from, span) = f.window();
            from > at || from + span + t.recover < at
        }
    });
    // An application too slow for its input holds the DISCONNECT back behind the messages
    // it has not taken; the client then sees only the connection close.
    let held = t.cfg.backpressure && sc.device.app_take_every_ms.is_some() && !sc.inject.is_empty();
    // Without pings a connection that died silently earlier is never noticed: the
    // DISCONNECT goes to a connection the device no longer has.
    let unnoticed = t.ping.is_infinite() && sc.fault.iter().any(|f| silent(f) && f.window().0 < at);
    let in_run = at + 2.0 * t.rtt + 1.0 <= sc.duration_s + sc.drain_s;
    // A device still sending when the broker closes leaves data unread there, and closing
    // with unread data resets the connection (RFC 9293 section 3.10.4): with jitter the
    // reset can overtake the DISCONNECT, which is then lost with the connection. (Found by
    // `explore --seed 89`: a QoS 0 stream every 10 ms.)
    let near = |start_s: f64, end_s: f64| start_s <= at + t.rtt && end_s >= at - t.rtt;
    let jitter = sc.network.jitter_ms > 0 || sc.fault.iter().any(|f| matches!(f, Fault::Latency { jitter_ms, .. } if *jitter_ms > 0));
    let sending = sc.workload.iter().any(|w| near(w.start_s, w.end_s())) || sc.inject.iter().any(|i| i.qos > 0 && near(i.start_s, i.end_s()));
    (clear && !held && !unnoticed && in_run && at >= 2.0 && !(jitter && sending)).then_some(reason)
}

/// What the broker's access control refuses, the application hears of: under MQTT 5 a
/// QoS 1/2 publish to a denied topic fails (PUBACK or PUBREC 0x87; 3.1.1 has no code for it,
/// the broker acknowledges and drops it), and a subscription to a denied filter is refused
/// in its SUBACK (both versions). Left out where the device may die with the request or the
/// application may disconnect before the answer, and (for publishes) where the run may end
/// before every publish is answered: an outage that outlasts it keeps the refusal away.
fn access_control(sc: &Scenario, t: &Timing, e: &mut Expect, disconnect_at: Option<f64>, drains: bool) {
    if sc.broker.deny.is_empty() || sc.chaos.is_some() || client_starts_over(sc) || disconnect_at.is_some() {
        return;
    }
    let refused_publish = |w: &Workload| w.qos > 0 && w.deadline_ms.is_none() && !cancel_targets(sc, w) && denied(sc, &w.topic.replace("{device}", "0"));
    if t.v5() && drains && sc.workload.iter().any(refused_publish) {
        e.min_publish_failures = Some(1);
    }
    if sc.device.subscribe.iter().any(|s| denied(sc, &s.filter)) {
        e.min_subscribe_refusals = Some(1);
    }
}

/// Whether the broker's access control refuses `topic` (a topic name, or a filter).
fn denied(sc: &Scenario, topic: &str) -> bool {
    sc.broker.deny.iter().any(|d| d == topic || mqtt_protocol::codec::topic::topic_matches(d, topic))
}

/// MQTT 5: while the observer is away (its session kept), a reading the device publishes at
/// QoS 1/2 with a Message Expiry shorter than what is left of the absence must expire at the
/// broker. Only where nothing else happens (the device connected and publishing, the broker
/// keeping the observer's session and queue) and one such publish falls well inside.
fn outgoing_expiry_must_drop(sc: &Scenario, t: &Timing) -> bool {
    if !t.v5() || sc.chaos.is_some() || sc.brokers > 1 {
        return false;
    }
    let Some((away, back)) = sc.fault.iter().find_map(|f| if let Fault::ObserverAway { at_s, for_s } = f { Some((*at_s, at_s + for_s)) } else { None }) else {
        return false;
    };
    let quiet = sc.fault.iter().all(|f| matches!(f, Fault::ObserverAway { .. } | Fault::Subscribe { .. } | Fault::Unsubscribe { .. }));
    let published: u64 = sc.workload.iter().map(|w| w.count).sum();
    // The broker drops an expired message when it would send it: the observer must be back
    // before the run ends.
    if !quiet || back + 2.0 > sc.duration_s + sc.drain_s || published > sc.broker.max_queued_messages as u64 || published > u64::from(t.cfg.max_queued) {
        return false;
    }
    // Sent once what was published before it has gone through the window (see `send_times`);
    // expired at the broker if it waits there past its expiry before the observer is back
    // (with a second to spare each way): sent after the observer left even at the best
    // round trip, and expired before it is back even at the worst. (A topic the broker
    // refuses is never queued for anyone.)
    send_times(sc, t).into_iter().any(|(w, earliest, latest)| {
        let w = &sc.workload[w];
        let Some(expiry) = w.message_expiry_s.filter(|_| w.deadline_ms.is_none() && !denied(sc, &w.topic.replace("{device}", "0"))) else {
            return false;
        };
        earliest >= away + 1.0 && latest + f64::from(expiry) + 1.0 + 4.0 * t.rtt < back
    })
}

/// The client's in-flight window to the broker: `max_inflight`, capped under MQTT 5 by the
/// broker's Receive Maximum; at least one.
fn send_window(sc: &Scenario, t: &Timing) -> u16 {
    let c = &t.cfg;
    if c.mqttv5 { c.max_inflight.min(sc.broker.receive_maximum) } else { c.max_inflight }.max(1)
}

/// When each QoS 1/2 publish of the workloads leaves, at the earliest and at the latest: in
/// publish order, no sooner than it was made, and behind those made before it, the
/// in-flight window passing `window` of them a round trip (two round trips at QoS 2), at
/// the best round trip and at the worst. By workload index. Found by `explore`:
/// - `--seed 193`: a QoS 2 stream through a window of 2 held readings with a 2 s expiry in
///   the client until the observer was back, so the broker had none to expire;
/// - `--seed 197`: at the worst round trip a backlog through a window of 1 would have lasted
///   until the observer left; at the real one the readings had all gone before.
fn send_times(sc: &Scenario, t: &Timing) -> Vec<(usize, f64, f64)> {
    let window = f64::from(send_window(sc, t));
    let mut made: Vec<(f64, usize)> = Vec::new();
    for (i, w) in sc.workload.iter().enumerate().filter(|(_, w)| w.qos > 0) {
        made.extend(w.times().map(|at| (at, i)));
    }
    made.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut free_early, mut free_late) = (0.0f64, 0.0f64);
    made.into_iter()
        .map(|(at, i)| {
            let exchanges = f64::from(sc.workload[i].qos) / window;
            let (earliest, latest) = (at.max(free_early), at.max(free_late));
            free_early = earliest + t.rtt_min * exchanges;
            free_late = latest + t.rtt * exchanges;
            (i, earliest, latest)
        })
        .collect()
}

/// A publish made while the link is down must fail once its deadline passes.
fn deadline_must_fail(sc: &Scenario) -> bool {
    if sc.device.store.is_some() || sc.chaos.is_some() || client_starts_over(sc) {
        return false;
    }
    let max_queued = u64::from(device_config(sc, 1, 0).max_queued);
    sc.workload.iter().any(|w| {
        let Some(dl) = w.deadline_ms else { return false };
        // Found by explore: a cancel inside the outage, before the deadlines passed.
        if cancel_targets(sc, w) {
            return false;
        }
        let times = |from: f64, to: f64| w.times().filter(move |p| *p >= from && *p <= to);
        link_downs(sc).into_iter().filter(|(_, up)| *up <= sc.duration_s + sc.drain_s).any(|(at_s, up)| {
            let last = up - dl as f64 / 1000.0 - 1.0;
            times(at_s + 0.2, last).next().is_some() && (times(0.0, last).count() as u64) < max_queued / 2
        })
    })
}

/// Whether a `cancel` names `w`'s topic: it takes the publishes it finds, so none of them
/// fails then (not for its deadline, nor for the broker's refusal).
fn cancel_targets(sc: &Scenario, w: &Workload) -> bool {
    sc.fault.iter().any(|f| matches!(f, Fault::Cancel { topic, .. } if *topic == w.topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Scenario {
        Scenario::parse(text).unwrap()
    }

    #[test]
    fn a_quiet_run_expects_no_reconnects_and_no_will() {
        let sc = parse("duration_s = 30\n[device]\nwill = { topic = \"w\", payload = \"x\" }\n[[workload]]\ntopic = \"t\"\nevery_ms = 100\ncount = 10\n");
        let e = derive(&sc);
        assert_eq!(e.no_qos1_loss, Some(true));
        assert_eq!(e.will_delivered, Some(false));
        assert_eq!(e.max_reconnects, Some(1));
        assert_eq!(e.reconnect_within_ms, None);
    }

    /// A `disconnect` midway owes nothing after it, unless a boot follows with a store to
    /// pick up what it kept: then everything accepted must arrive, and the power cycle after
    /// the clean DISCONNECT cuts no connection (no will), nor is the device up again right
    /// after a broker outage that heals while it is off the broker.
    #[test]
    fn a_disconnect_midway_owes_delivery_only_to_a_boot_with_a_store() {
        let base = "duration_s = 90\ndrain_s = 60\n[device]\nwill = { topic = \"w\", payload = \"x\" }\nkeepalive_s = 10\nresponse_time_ms = 2000\n[[workload]]\ntopic = \"t\"\nevery_ms = 500\ncount = 100\n[[fault]]\nkind = \"disconnect\"\nat_s = 20\n";
        let boot = "[[fault]]\nkind = \"power_cycle\"\nat_s = 30\noff_s = 20\n";
        let with_store = |text: &str| text.replacen("[device]\n", "[device]\nstore = { capacity_kib = 64, sector_kib = 4 }\n", 1);
        let no_boot = derive(&parse(&with_store(base)));
        assert_eq!(no_boot.no_qos1_loss, None, "nothing boots after the disconnect");
        let no_store = derive(&parse(&format!("{base}{boot}")));
        assert_eq!(no_store.no_qos1_loss, None, "without a store the disconnect fails what waited");
        let e = derive(&parse(&with_store(&format!("{base}{boot}"))));
        assert_eq!(e.no_qos1_loss, Some(true));
        // A disconnect due while a power cut has the device off is carried out at its next
        // boot: here the one after the power cycle, so nothing boots after it.
        let off = "[[fault]]\nkind = \"power_cut\"\nat_s = 18\noff_s = 1\nduring = \"any\"\nwithin_s = 2\n";
        assert_eq!(derive(&parse(&with_store(&format!("{base}{off}{boot}")))).no_qos1_loss, None);
        assert_eq!(e.will_delivered, None, "a power cut long past the keepalive, but after a clean DISCONNECT");
        // Without the disconnect, that power cycle sends the will.
        let connected = base.replace("kind = \"disconnect\"\nat_s = 20\n", "kind = \"subscribe\"\nat_s = 20\nfilter = \"x\"\n");
        assert_eq!(derive(&parse(&with_store(&format!("{connected}{boot}")))).will_delivered, Some(true));
        // A broker outage that heals while the device is off the broker: it is not up again
        // within the recovery limit (it is not trying).
        let outage = "[[fault]]\nkind = \"broker_down\"\nat_s = 22\nfor_s = 5\n[[fault]]\nkind = \"power_cycle\"\nat_s = 60\noff_s = 1\n";
        assert_eq!(derive(&parse(&with_store(&format!("{base}{outage}")))).recover_within_ms, None);
        assert!(derive(&parse(&with_store(&format!("{connected}{outage}")))).recover_within_ms.is_some());
    }

    #[test]
    fn a_lone_link_drop_expects_a_quick_reconnect() {
        let sc = parse("duration_s = 60\n[[fault]]\nkind = \"link_down\"\nat_s = 10\nfor_s = 5\n");
        assert_eq!(derive(&sc).reconnect_within_ms, Some(1000 + 8 * 20));
    }

    #[test]
    fn a_broker_outage_at_the_link_return_drops_the_reconnect_deadline() {
        let sc = parse("duration_s = 60\n[[fault]]\nkind = \"link_down\"\nat_s = 10\nfor_s = 5\n[[fault]]\nkind = \"broker_down\"\nat_s = 12\nfor_s = 10\n");
        assert_eq!(derive(&sc).reconnect_within_ms, None);
    }

    /// Found by `explore --seed 139`: the will waited at the broker behind a QoS 2 stream
    /// for the observer that a window of 2 delivered at half the rate it came in, and
    /// arrived 4.5 s after it was sent. The run ran the expected time out: the scenario
    /// with more room expects the will, later than without the stream.
    #[test]
    fn a_will_queued_behind_a_stream_for_the_observer_is_expected_later() {
        let base = "duration_s = 0.1\ntick_ms = 20\n[network]\nlatency_ms = 50\n[device]\nkeepalive_s = 10\nresponse_time_ms = 2000\nwill = { topic = \"w\", payload = \"x\" }\n[broker]\nreceive_maximum = 2\n[[fault]]\nkind = \"power_cycle\"\nat_s = 5.2\noff_s = 40\n";
        let stream = "[[inject]]\ntopic = \"c\"\nqos = 2\nstart_s = 15.6\nevery_ms = 20\ncount = 296\n";
        let found = derive(&parse(&format!("drain_s = 22.5\n{base}{stream}")));
        assert_eq!(found.will_delivered, None, "not due before the run ends: {:?}", found.will_by_s);
        let quiet = derive(&parse(&format!("drain_s = 60\n{base}")));
        let behind = derive(&parse(&format!("drain_s = 60\n{base}{stream}")));
        assert_eq!((quiet.will_delivered, behind.will_delivered), (Some(true), Some(true)));
        let (quiet, behind) = (quiet.will_by_s.unwrap(), behind.will_by_s.unwrap());
        // Sent at 20.12 s, seen by the observer at 24.66 s in the run.
        assert!(quiet < 24.66 && behind > 24.66 && behind < 40.0, "{quiet} {behind}");
    }

    #[test]
    fn a_long_power_cut_expects_the_will() {
        let sc = parse("duration_s = 60\n[device]\nkeepalive_s = 10\nresponse_time_ms = 2000\nwill = { topic = \"w\", payload = \"x\" }\n[[fault]]\nkind = \"power_cycle\"\nat_s = 10\noff_s = 30\n");
        let e = derive(&sc);
        assert_eq!(e.will_delivered, Some(true));
        assert!(e.will_by_s.unwrap() <= 27.0, "{:?}", e.will_by_s);
    }

    /// Found by `explore --seed 31`: the broker dropped the observer's PINGRESPs, then refused
    /// it, so it was away when the will went out.
    #[test]
    fn no_will_is_expected_where_the_observer_may_lose_its_connection_first() {
        let power_cut = "duration_s = 60\n[device]\nkeepalive_s = 20\nwill = { topic = \"w\", payload = \"x\" }\n[[fault]]\nkind = \"power_cycle\"\nat_s = 3.6\noff_s = 40\n";
        assert_eq!(derive(&parse(power_cut)).will_delivered, Some(true));
        for fault in [
            "kind = \"drop_acks\"\nat_s = 11.6\npacket = \"pingresp\"\ncount = 3",
            "kind = \"refuse\"\nat_s = 21.2\nfor_s = 40\ncode = 5",
            "kind = \"stop_pings\"\nat_s = 11.6\nfor_s = 20",
        ] {
            assert_eq!(derive(&parse(&format!("{power_cut}[[fault]]\n{fault}\n"))).will_delivered, None, "{fault}");
        }
    }

    /// Found by `explore --seed 47`: a QoS 2 backlog the broker sends one at a time (receive
    /// maximum 1, 100 ms round trips) was still draining when the link went for 40 s, and the
    /// outage pushed its end past the run's.
    #[test]
    fn a_backlog_that_an_outage_interrupts_is_expected_only_if_it_still_drains_in_time() {
        let backlog = "duration_s = 48\ndrain_s = 60\n[network]\nlatency_ms = 50\n[device]\nkeepalive_s = 5\nresponse_time_ms = 1000\nclean = false\nmqttv5 = true\nsession_expiry_s = 3600\nreceive_maximum = 1\nsubscribe = [{ filter = \"c\", qos = 2 }]\n[[inject]]\ntopic = \"c\"\nqos = 2\nstart_s = 21.1\nevery_ms = 20\ncount = 243\n";
        assert_eq!(derive(&parse(backlog)).device_receives, vec!["c".to_string()]);
        let outage = format!("{backlog}[[fault]]\nkind = \"link_down\"\nat_s = 38.3\nfor_s = 40\n");
        assert!(derive(&parse(&outage)).device_receives.is_empty());
    }

    /// Found by `explore --seed 131`: PUBACKs dropped by two faults, one armed before the
    /// first publish and one during a 40 s outage, all struck after the outage, one after
    /// another: four ack timeouts and reconnects (MQTT 5 resends only on a new connection).
    #[test]
    fn dropped_acknowledgements_add_up_and_strike_after_an_outage() {
        let text = |faults: &str| {
            format!(
                "duration_s = 55\ndrain_s = 44\ntick_ms = 10\n[network]\nlatency_ms = 50\n[device]\nkeepalive_s = 10\nresponse_time_ms = 2000\nmqttv5 = true\nbackoff_max_ms = 1000\n[[workload]]\ntopic = \"t\"\nqos = 1\nstart_s = 15.9\nevery_ms = 200\ncount = 1\n{faults}"
            )
        };
        let drop = |at: f64| format!("[[fault]]\nkind = \"drop_acks\"\nat_s = {at}\npacket = \"puback\"\ncount = 2\n");
        let outage = "[[fault]]\nkind = \"link_down\"\nat_s = 7.3\nfor_s = 40\n";
        let one = drain_deadline(&parse(&text(&drop(17.9))));
        let two = drain_deadline(&parse(&text(&format!("{}{}", drop(5.4), drop(17.9)))));
        let after_outage = drain_deadline(&parse(&text(&format!("{}{outage}{}", drop(5.4), drop(17.9)))));
        // Each recovery is 21.7 s here: the four drops alone take 86.8 s after the outage.
        assert!(two >= one + 2.0 * 21.0, "{one} {two}");
        assert!(after_outage >= 47.3 + 4.0 * 21.7, "{after_outage}");
        // The run found (99 s) cannot show the drain, so it is not expected.
        assert_eq!(derive(&parse(&text(&format!("{}{outage}{}", drop(5.4), drop(17.9))))).drain_within_s, None);
    }

    /// Found by `explore --seed 47`: the cancel took the publishes before their deadlines
    /// passed in the outage, so none failed.
    #[test]
    fn no_deadline_failure_is_expected_where_a_cancel_takes_the_publishes() {
        let expiring = "duration_s = 0.1\ndrain_s = 67\n[[workload]]\ntopic = \"t\"\nqos = 1\nstart_s = 3.6\nevery_ms = 1000\ncount = 2\ndeadline_ms = 5000\n[[fault]]\nkind = \"link_down\"\nat_s = 1.1\nfor_s = 40\n";
        assert_eq!(derive(&parse(expiring)).min_publish_failures, Some(1));
        let cancelled = format!("{expiring}[[fault]]\nkind = \"cancel\"\nat_s = 7.1\ntopic = \"t\"\n");
        assert_eq!(derive(&parse(&cancelled)).min_publish_failures, None);
    }

    /// Found by `explore --seed 89`: a QoS 0 stream every 10 ms ran into the broker's close,
    /// and with jitter the reset it caused overtook the DISCONNECT.
    #[test]
    fn a_server_disconnect_is_expected_reported_unless_a_reset_can_overtake_it() {
        let quiet = "duration_s = 13.2\ndrain_s = 1\n[network]\nlatency_ms = 50\n[device]\nmqttv5 = true\n[[fault]]\nkind = \"server_disconnect\"\nat_s = 10.8\nreason = 152\n";
        assert_eq!(derive(&parse(quiet)).down_reason.as_deref(), Some("ServerDisconnect(152)"));
        let stream = "[[workload]]\ntopic = \"t\"\nqos = 0\nstart_s = 9.7\nevery_ms = 10\ncount = 232\n";
        // Without jitter the DISCONNECT arrives before the reset, stream or not.
        assert_eq!(derive(&parse(&format!("{quiet}{stream}"))).down_reason.as_deref(), Some("ServerDisconnect(152)"));
        let jittery = quiet.replace("latency_ms = 50", "latency_ms = 50\njitter_ms = 19");
        assert_eq!(derive(&parse(&jittery)).down_reason.as_deref(), Some("ServerDisconnect(152)"), "jitter alone");
        assert_eq!(derive(&parse(&format!("{jittery}{stream}"))).down_reason, None);
        // A stream that ended well before the close leaves nothing unread.
        let ended = stream.replace("start_s = 9.7", "start_s = 5.0").replace("count = 232", "count = 100");
        assert_eq!(derive(&parse(&format!("{jittery}{ended}"))).down_reason.as_deref(), Some("ServerDisconnect(152)"));
    }

    /// Found by `explore --seed 89`: a broker crash took the observer away, its reconnect
    /// lagged the device's behind a slow CONNACK, and the first copy of a reading whose PUBACK
    /// was dropped expired in its queue; the device's resend after a reconnect came last.
    #[test]
    fn readings_with_an_expiry_are_not_expected_in_order_where_the_observer_can_be_away() {
        let base = "duration_s = 39\ndrain_s = 103\n[device]\nmqttv5 = true\n[[workload]]\ntopic = \"t\"\nqos = 1\nstart_s = 5.4\nevery_ms = 200\ncount = 144\nmessage_expiry_s = 2\n";
        assert_eq!(derive(&parse(base)).in_order, Some(true));
        let crash = format!("{base}[[fault]]\nkind = \"broker_down\"\nat_s = 13.5\nfor_s = 5.0\n");
        assert_eq!(derive(&parse(&crash)).in_order, None);
        // Without an expiry nothing is dropped from the observer's queue.
        assert_eq!(derive(&parse(&crash.replace("message_expiry_s = 2\n", ""))).in_order, Some(true));
    }

    #[test]
    fn qos2_with_a_kept_session_expects_no_duplicates() {
        let sc = parse(
            "duration_s = 60\n[device]\nclean = false\nsubscribe = [{ filter = \"c\", qos = 2 }]\n[[inject]]\ntopic = \"c\"\nqos = 2\nstart_s = 5\nevery_ms = 100\ncount = 50\n[[fault]]\nkind = \"link_down\"\nat_s = 6\nfor_s = 3\n",
        );
        let e = derive(&sc);
        assert_eq!(e.device_max_duplicates, Some(0));
        assert_eq!(e.device_receives, vec!["c".to_string()]);
    }

    #[test]
    fn a_short_silent_link_or_broker_outage_expects_recovery_within_a_probe() {
        let silent = parse("duration_s = 60\n[[fault]]\nkind = \"silent_link\"\nat_s = 10\nfor_s = 8\n");
        // The probe (800 ms), 6 round trips of 2 × (5 ms latency + a 5 ms tick), 300 ms of slack.
        assert_eq!(derive(&silent).recover_within_ms, Some(800 + 6 * 20 + 300));
        let restart = parse("duration_s = 60\n[[fault]]\nkind = \"broker_restart\"\nat_s = 10\ndown_s = 2\n");
        assert!(derive(&restart).recover_within_ms.is_some());
        // Longer than the fast probes are sure to last: no deadline.
        let long = parse("duration_s = 90\n[[fault]]\nkind = \"silent_link\"\nat_s = 10\nfor_s = 40\n");
        assert_eq!(derive(&long).recover_within_ms, None);
    }

    #[test]
    fn what_the_access_control_refuses_is_expected_reported() {
        let text = |v5: bool| {
            format!("duration_s = 60\n[device]\nmqttv5 = {v5}\nsubscribe = [{{ filter = \"sensor/+/denied\", qos = 1 }}]\n[broker]\ndeny = [\"sensor/+/denied\"]\n[[workload]]\ntopic = \"sensor/{{device}}/denied\"\nevery_ms = 500\ncount = 5\n")
        };
        let v5 = derive(&parse(&text(true)));
        assert_eq!((v5.min_publish_failures, v5.min_subscribe_refusals), (Some(1), Some(1)));
        // 3.1.1 has no PUBACK code for it: the broker acknowledges and drops.
        let v3 = derive(&parse(&text(false)));
        assert_eq!((v3.min_publish_failures, v3.min_subscribe_refusals), (None, Some(1)));
        // Found by `explore --seed 61`: a half-open link from before the publishes until
        // after the run ends; no answer, so no refusal, can come back in time.
        let outlasted = "duration_s = 0.1\ndrain_s = 11.6\n[device]\nmqttv5 = true\n[broker]\ndeny = [\"sensor/+/denied\"]\n[[workload]]\ntopic = \"sensor/{device}/denied\"\nqos = 2\nstart_s = 11.4\nevery_ms = 200\ncount = 2\n[[fault]]\nkind = \"half_open\"\nat_s = 11.3\nfor_s = 40.0\n";
        assert_eq!(derive(&parse(outlasted)).min_publish_failures, None);
        // Found by `explore --seed 67`: the only denied publish cancelled inside an outage,
        // before it reached the broker.
        let cancelled = "duration_s = 66\ndrain_s = 90\n[device]\nmqttv5 = true\n[broker]\ndeny = [\"sensor/+/denied\"]\n[[workload]]\ntopic = \"sensor/{device}/denied\"\nqos = 1\nstart_s = 10.3\nevery_ms = 200\ncount = 1\n[[fault]]\nkind = \"link_down\"\nat_s = 8.6\nfor_s = 20.0\n[[fault]]\nkind = \"cancel\"\nat_s = 18.6\ntopic = \"sensor/{device}/denied\"\n";
        assert_eq!(derive(&parse(cancelled)).min_publish_failures, None);
    }

    #[test]
    fn readings_that_outlive_their_expiry_while_the_observer_is_away_must_expire() {
        let text = |for_s: u32| {
            format!("duration_s = 60\n[device]\nmqttv5 = true\n[[workload]]\ntopic = \"t\"\nevery_ms = 500\ncount = 100\nmessage_expiry_s = 2\n[[fault]]\nkind = \"observer_away\"\nat_s = 10\nfor_s = {for_s}\n")
        };
        assert_eq!(derive(&parse(&text(20))).min_expired, Some(1));
        assert_eq!(derive(&parse(&text(20))).in_order, None, "a resend may bring an expired copy's message late");
        // Away for less than the expiry and the round trips: nothing need expire.
        assert_eq!(derive(&parse(&text(3))).min_expired, None);
        // Found by `explore --seed 83`: readings to a topic the broker refuses are never
        // queued for the observer, so none expires there.
        let denied = text(20).replace("topic = \"t\"", "topic = \"sensor/{device}/denied\"") + "[broker]\ndeny = [\"sensor/+/denied\"]\n";
        assert_eq!(derive(&parse(&denied)).min_expired, None);
        // Found by `explore --seed 193`: behind a QoS 2 backlog through a window of 2, the
        // readings left the client after the observer was back.
        let backlog = include_str!("../../tests/found/expiry-held-behind-a-qos2-backlog.toml");
        assert_eq!(derive(&parse(backlog)).min_expired, None);
        // Without that backlog, the same readings must expire.
        let alone = backlog.replace("count = 388", "count = 3");
        assert_eq!(derive(&parse(&alone)).min_expired, Some(1));
        // Found by `explore --seed 197`: through a window of 1, the readings had all left
        // before the observer did; only at the worst round trip would they have been later.
        let gone = include_str!("../../tests/found/expiry-sent-before-the-observer-left.toml");
        assert_eq!(derive(&parse(gone)).min_expired, None);
        // Made while the observer is away, they must expire.
        let later = gone.replace("start_s = 7.8", "start_s = 25.5").replace("count = 256", "count = 3");
        assert_eq!(derive(&parse(&later)).min_expired, Some(1));
    }
}
