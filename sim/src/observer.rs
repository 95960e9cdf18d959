//! The observer: a subscriber client on the broker's host, over loopback (its link never
//! fails, DNS is never asked), recording every message it receives for the checks. A
//! broker crash ends the broker's tasks, not the observer's: it sees its connection drop
//! and reconnects, as a subscriber on another machine would.
//!
//! It runs the same component as the devices: the simulator then needs no second client,
//! and the observer exercises the receive side (QoS 2 exactly-once, resumed sessions) under
//! the broker's own faults. It subscribes at QoS 2 with a persistent session, so what it
//! records is what an end-to-end subscriber gets: a broker restart without persistence, or
//! a queue overflow, shows up at the observer as it would for a real one, and the broker's
//! own record says whether a missing message was the broker's doing or the device's.

use std::sync::Arc;
use std::time::Duration;

use mqtt_host::{default_config, ComponentFile, Config, Device, Event, Qos, Subscription};
use serde_json::json;
use tokio::sync::Notify;

use crate::broker::OBSERVER_ID;
use crate::device::Pace;
use crate::platform::SimPlatform;
use crate::world::{now_ms, seq_of, Delivery, Shared};

/// Its name in the trace.
pub const HOST: &str = "observer";

/// The broker, seen from its own host.
const BROKER_ADDRESS: &str = "127.0.0.1";

/// Longest the loop sleeps with nothing scheduled.
const IDLE_MS: u64 = 60_000;

pub struct ObserverCtx {
    pub component: ComponentFile,
    /// The scenario's `observe` filters.
    pub filters: Vec<String>,
    pub world: Shared,
    /// Its own wakeup, so it never takes a notification meant for a device.
    pub wake: Arc<Notify>,
}

/// A connected observer client, its subscriptions asked for.
fn start(ctx: &ObserverCtx) -> Result<Device, String> {
    let platform = SimPlatform::for_observer(ctx.world.clone(), ctx.wake.clone());
    let mut client = Device::new(&ctx.component, Box::new(platform), config(BROKER_ADDRESS), HOST).map_err(|e| format!("observer: {e}"))?;
    // The broker already holds these subscriptions (made before t = 0); asking again is
    // harmless, and lets the client re-subscribe if a broker restart loses its session.
    let subscriptions = ctx
        .filters
        .iter()
        .map(|f| Subscription { filter: f.clone(), qos: Qos::ExactlyOnce, no_local: false, retain_as_published: false, retain_handling: 2 })
        .collect();
    client.subscribe(subscriptions).map_err(|e| format!("observer subscribe: {e}"))?;
    client.connect().map_err(|e| format!("observer connect: {e}"))?;
    Ok(client)
}

/// The observer's client config: it resumes the session the broker made for it (so its
/// subscriptions exist from t = 0), keeps a queue nothing overflows, and comes back quickly
/// after a broker restart.
pub fn config(broker_host: &str) -> Config {
    let mut c = default_config(broker_host, OBSERVER_ID);
    c.clean_init = false;
    c.clean = false;
    c.keepalive_secs = 60;
    c.queue_len = 65_535;
    c.receive_maximum = 65_535;
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 500;
    c.seed = 0x0b5e_55ed;
    // MQTT 5 for retain handling 2: (re)subscribing must not replay retained messages,
    // which would look like duplicates.
    c.mqttv5 = true;
    c.session_expiry_secs = u32::MAX;
    c
}

pub async fn run(ctx: Arc<ObserverCtx>) -> turmoil::Result {
    let mut client = start(&ctx)?;
    let mut pace = Pace::default();
    let mut away = false;
    loop {
        // An `observer_away` fault: a clean DISCONNECT (the session stays), then back.
        let wanted = ctx.world.lock().observer_away;
        if wanted != away {
            away = wanted;
            if away {
                client.disconnect().map_err(|e| format!("observer disconnect: {e}"))?;
            } else {
                // Back as a new process would be (a disconnected client stays closed),
                // resuming its session (clean_init = false).
                client = start(&ctx)?;
            }
        }
        let events = client.poll().map_err(|e| format!("observer poll: {e}"))?;
        let now = now_ms();
        let mut retry = false;
        {
            let mut w = ctx.world.lock();
            for e in events {
                match e {
                    Event::Message(m) => {
                        let seq = seq_of(&m.payload);
                        w.log(now, HOST, "message", json!({ "topic": m.topic, "seq": seq, "dup": m.dup }));
                        w.rec.observed.push(Delivery { topic: m.topic, seq, t_ms: now, payload: m.payload, dup: m.dup, retained: m.retained });
                    }
                    Event::Up(session_present) => w.log(now, HOST, "up", json!({ "session_present": session_present })),
                    Event::Down(why) => w.log(now, HOST, "down", json!({ "reason": format!("{why:?}") })),
                    Event::ConnectFailed(why) => {
                        // The broker may not be listening yet: try again, as a service would.
                        w.log(now, HOST, "connect_failed", json!({ "reason": why }));
                        retry = true;
                    }
                    Event::Discarded(n) => w.rec.host_errors.push(format!("the observer discarded {n} messages")),
                    _ => {}
                }
            }
        }
        if retry && !away {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.connect().map_err(|e| format!("observer connect: {e}"))?;
            continue;
        }
        let deadline = client.next_deadline().map_err(|e| format!("observer next-deadline: {e}"))?;
        let wait = pace.wait(now, deadline.map_or(IDLE_MS, |d| d.saturating_sub(now_ms())).min(IDLE_MS));
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}
