//! The device host: the real component, run through `mqtt-host` on the simulated platform,
//! with the scenario's application workload on top.

use std::sync::Arc;
use std::time::Duration;

use mqtt_host::{ClientError, ComponentFile, Config, Device, DeviceError, Event, Publish, PublishProperties, Qos, Subscription};
use serde_json::json;
use tokio::sync::Notify;

use crate::flash::SimFlash;
use crate::platform::SimPlatform;
use crate::scenario::Workload;
use crate::world::{now_ms, payload_with_seq, seq_of, Accepted, Delivery, Shared};

pub struct DeviceCtx {
    /// Index in the fleet, and the turmoil host name.
    pub index: u32,
    pub name: String,
    /// The turmoil host it runs on (a power cut cuts the whole host off).
    pub host: String,
    pub component: ComponentFile,
    pub config: Config,
    pub subscriptions: Vec<Subscription>,
    pub workloads: Vec<Workload>,
    /// The application takes its messages only this often (see `DeviceSpec`).
    pub app_take_every_ms: Option<u64>,
    /// What the application answers the broker's authentication challenges with.
    pub auth_secret: Option<Vec<u8>>,
    pub world: Shared,
    pub wake: Arc<Notify>,
}

/// How long the application waits before calling `connect` again after it failed.
const APP_RETRY_MS: u64 = 2_000;

/// Longest the loop sleeps with nothing scheduled (it is woken by IO and the timeline).
const IDLE: u64 = 60_000;

/// Every QoS in a scenario was checked by `Scenario::validate`.
pub(crate) fn qos(q: u8) -> Qos {
    mqtt_host::qos_from_level(q).unwrap_or(Qos::ExactlyOnce)
}

fn down_text(d: &mqtt_host::DownReason) -> String {
    format!("{d:?}")
}

/// One boot of the device, until the simulation ends or the host is crashed.
pub async fn run(ctx: Arc<DeviceCtx>) -> turmoil::Result {
    let d = ctx.index as usize;
    let boot = {
        let mut w = ctx.world.lock();
        let b = w.rec.boots[d];
        w.rec.boots[d] += 1;
        // Readings that fell due while the power was off were never taken.
        let now = now_ms();
        for (i, wl) in ctx.workloads.iter().enumerate() {
            let start = (wl.start_s * 1000.0) as u64;
            while w.workload_next[d][i] < wl.count && start + w.workload_next[d][i] * wl.every_ms < now {
                w.workload_next[d][i] += 1;
            }
        }
        // A new boot's application has been told nothing yet.
        w.told_up[d] = false;
        w.log(now, &ctx.name, "boot", json!({ "boot": b }));
        b
    };
    let mut platform = SimPlatform::new(ctx.world.clone(), ctx.wake.clone());
    if ctx.world.lock().flash[d].is_some() {
        platform.flash = Some(SimFlash { world: ctx.world.clone(), device: d, name: ctx.name.clone(), host: ctx.host.clone() });
    }
    let mut dev = Device::new(&ctx.component, Box::new(platform), ctx.config.clone(), &ctx.name).map_err(|e| format!("device: {e}"))?;
    // Start-up subscriptions; a queue still full of what the store kept from before the
    // power cut refuses them for now, and the application tries again (as it would).
    let mut startup = (!ctx.subscriptions.is_empty()).then(|| ctx.subscriptions.clone());
    let mut subscribe_startup = |dev: &mut Device| -> Result<(), String> {
        if let Some(subs) = startup.take() {
            match dev.subscribe(subs.clone()) {
                Ok(_) => {}
                Err(DeviceError::Client(ClientError::QueueFull)) => startup = Some(subs),
                Err(e) => return Err(format!("subscribe: {e}")),
            }
        }
        Ok(())
    };
    subscribe_startup(&mut dev)?;
    dev.connect().map_err(|e| format!("connect: {e}"))?;
    let mut closed = false;
    let mut pace = Pace::default();
    // What an mqtt_as application does when its first connect raises: wait, try again.
    let mut retry_connect_at: Option<u64> = None;
    // A slow application takes its messages only at these instants; between them the
    // device is still polled (pings, acknowledgements) but hands over no message.
    let mut next_take = 0;
    loop {
        let now = now_ms();
        // (After `disconnect` the application is done: it does not try again.)
        if !closed && retry_connect_at.is_some_and(|t| t <= now) {
            retry_connect_at = None;
            dev.connect().map_err(|e| format!("connect: {e}"))?;
        }
        let take = match ctx.app_take_every_ms {
            Some(every) if now >= next_take => {
                next_take = now + every;
                u32::MAX
            }
            Some(_) => 0,
            None => u32::MAX,
        };
        if std::mem::take(&mut ctx.world.lock().trap_now[d]) {
            // Too little fuel for any call: the poll below traps, and the watchdog restarts
            // the instance inside it.
            dev.starve_next_call(100);
        }
        let Some(events) = poll_unless_cut(&ctx, &mut dev, boot, take)? else {
            // Nothing runs until the timeline boots the host again.
            return std::future::pending().await;
        };
        let mut challenges = Vec::new();
        if record(&ctx, boot, now, events, &mut challenges) && !closed {
            retry_connect_at = Some(now + APP_RETRY_MS);
        }
        for challenge in challenges {
            // What an application doing enhanced authentication does: answer each challenge.
            let answer = mqtt_broker_model::auth_answer(&challenge, ctx.auth_secret.as_deref().unwrap_or_default());
            if let Err(e) = dev.authenticate(&answer) {
                ctx.world.lock().log(now, &ctx.name, "authenticate_refused", json!({ "error": e.to_string() }));
            }
        }
        if !closed && std::mem::take(&mut ctx.world.lock().disconnect_now[d]) {
            dev.disconnect().map_err(|e| format!("disconnect: {e}"))?;
            if power_cut(&ctx) {
                // The power failed inside `disconnect`: the application never saw it
                // return, and the broker sees the link die.
                return std::future::pending().await;
            }
            closed = true;
            {
                let mut w = ctx.world.lock();
                w.rec.disconnect_called_at = Some(now);
                w.log(now, &ctx.name, "disconnect_called", json!({}));
            }
            let Some(events) = poll_unless_cut(&ctx, &mut dev, boot, u32::MAX)? else {
                return std::future::pending().await;
            };
            // With a store every QoS 1/2 publish has a record, and `disconnect` keeps it
            // for the next boot: one it failed instead (reason 0) is not exempt from
            // `no_qos1_loss` as a failure the application was told of, but lost.
            let dropped: Vec<u64> = match ctx.world.lock().flash[d].is_some() {
                true => events.iter().filter_map(|e| if let Event::PublishFailed((t, 0)) = e { Some(*t) } else { None }).collect(),
                false => Vec::new(),
            };
            record(&ctx, boot, now, events, &mut Vec::new());
            if !dropped.is_empty() {
                let mut w = ctx.world.lock();
                for t in &dropped {
                    w.rec.failed.remove(&(ctx.index, boot, *t));
                }
                w.log(now, &ctx.name, "disconnect_dropped_stored", json!({ "tokens": dropped }));
            }
        }
        // (An application that disconnected has stopped trying to subscribe too: found by
        // `explore --seed 302`, a subscribe retried on the closed client.)
        if !closed {
            subscribe_startup(&mut dev)?;
        }
        let requests = std::mem::take(&mut ctx.world.lock().app_requests[d]);
        for (filter, q) in requests {
            let r = match q {
                Some(q) => {
                    dev.subscribe(vec![Subscription { filter: filter.clone(), qos: qos(q), no_local: false, retain_as_published: false, retain_handling: 0 }])
                }
                None => dev.unsubscribe(vec![filter.clone()]),
            };
            let mut w = ctx.world.lock();
            match r {
                // Tried again on the next turn, as an application told "queue full" would.
                Err(DeviceError::Client(ClientError::QueueFull)) => w.app_requests[d].push((filter, q)),
                Ok(token) => w.log(now, &ctx.name, if q.is_some() { "subscribe" } else { "unsubscribe" }, json!({ "filter": filter, "token": token })),
                Err(e) => w.log(now, &ctx.name, "request_refused", json!({ "filter": filter, "error": e.to_string() })),
            }
        }
        cancel_due(&ctx, &mut dev, boot, now);
        let next_work = if closed { None } else { publish_due(&ctx, &mut dev, boot, now) };
        if power_cut(&ctx) {
            return std::future::pending().await;
        }
        let (restarts, refused) = (dev.restarts(), dev.replays_refused());
        {
            let mut w = ctx.world.lock();
            w.rec.restarts = w.rec.restarts.max(restarts);
            w.rec.replays_refused = w.rec.replays_refused.max(refused);
        }
        let deadline = dev.next_deadline().map_err(|e| format!("next-deadline: {e}"))?;
        let take_at = ctx.app_take_every_ms.map(|_| next_take);
        let wake_at = [deadline, next_work, retry_connect_at, take_at].into_iter().flatten().min().unwrap_or(now + IDLE);
        let wait = pace.wait(now, wake_at.saturating_sub(now_ms()).min(IDLE));
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}

/// Keeps a client that wants to be polled again at the same instant, over and over (a
/// retry loop without backoff, say), from stopping simulated time: after a few such polls
/// in one millisecond the loop lets the millisecond pass.
#[derive(Default)]
pub(crate) struct Pace {
    at: u64,
    polls: u32,
}

impl Pace {
    const POLLS_PER_INSTANT: u32 = 32;

    pub(crate) fn wait(&mut self, now: u64, wait: u64) -> u64 {
        if wait > 0 || now != self.at {
            self.at = now;
            self.polls = 0;
            return wait;
        }
        self.polls += 1;
        if self.polls > Self::POLLS_PER_INSTANT {
            1
        } else {
            0
        }
    }
}

/// Publish every workload message that is due; returns when the next one is.
fn publish_due(ctx: &DeviceCtx, dev: &mut Device, boot: u32, now: u64) -> Option<u64> {
    let mut next: Option<u64> = None;
    for (i, wl) in ctx.workloads.iter().enumerate() {
        loop {
            let d = ctx.index as usize;
            let k = ctx.world.lock().workload_next[d][i];
            if k >= wl.count {
                break;
            }
            let at = (wl.start_s * 1000.0) as u64 + k * wl.every_ms;
            if at > now {
                next = Some(next.map_or(at, |n: u64| n.min(at)));
                break;
            }
            ctx.world.lock().workload_next[d][i] += 1;
            let seq = u64::from(ctx.index) * 10_000_000 + (i as u64) * 100_000 + k;
            let properties = wl.message_expiry_s.map(|e| PublishProperties {
                payload_format_utf8: false,
                message_expiry_secs: Some(e),
                content_type: None,
                response_topic: None,
                correlation_data: None,
                subscription_ids: Vec::new(),
                user_properties: Vec::new(),
            });
            let p = Publish {
                topic: wl.topic.clone(),
                payload: payload_with_seq(seq, wl.payload_bytes),
                qos: qos(wl.qos),
                retain: wl.retain,
                properties,
                deadline_ms: wl.deadline_ms.map(|d| now + d),
            };
            let result = dev.publish(p);
            if power_cut(ctx) {
                // The application never saw this call return.
                return None;
            }
            let mut w = ctx.world.lock();
            match result {
                Ok(token) => {
                    w.rec.accepted.push(Accepted { device: ctx.index, seq, topic: wl.topic.clone(), qos: wl.qos, t_ms: now, token, boot });
                    w.log(now, &ctx.name, "publish", json!({ "seq": seq, "topic": wl.topic, "qos": wl.qos, "token": token }));
                }
                Err(e) => {
                    w.rec.publish_failures += 1;
                    w.log(now, &ctx.name, "publish_refused", json!({ "seq": seq, "error": e.to_string() }));
                }
            }
        }
    }
    next
}

/// The application cancels, on the topics the timeline named, every publish of this boot
/// whose token has not completed; a cancel the client accepted is recorded.
fn cancel_due(ctx: &DeviceCtx, dev: &mut Device, boot: u32, now: u64) {
    let topics = std::mem::take(&mut ctx.world.lock().app_cancels[ctx.index as usize]);
    for topic in topics {
        let open: Vec<(u64, u64)> = {
            let w = ctx.world.lock();
            let done = |token: u64| w.rec.acked.contains_key(&(ctx.index, boot, token)) || w.rec.failed.contains(&(ctx.index, boot, token));
            w.rec.accepted.iter().filter(|a| a.device == ctx.index && a.boot == boot && a.topic == topic && !done(a.token)).map(|a| (a.token, a.seq)).collect()
        };
        for (token, seq) in open {
            let result = dev.cancel(token);
            if power_cut(ctx) {
                // The power failed inside this call: the application never saw it return,
                // and cancels nothing more. The cancel may have taken (explore, seed 179).
                let mut w = ctx.world.lock();
                w.rec.cancel_cut.insert((ctx.index, boot, token));
                w.log(now, &ctx.name, "cancel_cut", json!({ "token": token, "seq": seq }));
                return;
            }
            let mut w = ctx.world.lock();
            match result {
                Ok(true) => {
                    w.rec.cancelled.insert((ctx.index, boot, token));
                    w.log(now, &ctx.name, "cancelled", json!({ "token": token, "seq": seq }));
                }
                Ok(false) => {}
                Err(e) => w.log(now, &ctx.name, "cancel_failed", json!({ "token": token, "error": e.to_string() })),
            }
        }
    }
}

/// Polls the device, taking up to `take` messages; `None` when the power failed inside the
/// call: nothing it returned reached the application (what it was handing over is
/// recorded as such).
fn poll_unless_cut(ctx: &DeviceCtx, dev: &mut Device, boot: u32, take: u32) -> Result<Option<Vec<Event>>, String> {
    let events = dev.poll_taking(take).map_err(|e| format!("poll: {e}"))?;
    if !power_cut(ctx) {
        return Ok(Some(events));
    }
    let seqs: Vec<u64> = events.iter().filter_map(|e| if let Event::Message(m) = e { seq_of(&m.payload) } else { None }).collect();
    // A publish this call failed (its deadline passed) was failed for good, in the store
    // too: the report died with the call, not the publish with the power. One a disconnect
    // left in the store was kept, and is the next boot's to send.
    let ended = |kept: bool| -> Vec<u64> {
        let ended = events.iter().filter_map(|e| if let Event::PublishFailed((t, r)) = e { Some((*t, *r)) } else { None });
        ended.filter(|(_, r)| (*r == mqtt_host::KEPT_IN_STORE) == kept).map(|(t, _)| t).collect()
    };
    let (failed, kept) = (ended(false), ended(true));
    let mut w = ctx.world.lock();
    w.log(now_ms(), &ctx.name, "handed_over_at_cut", json!({ "seqs": seqs, "failed_tokens": failed, "kept_tokens": kept }));
    w.rec.handed_over_at_cut.extend(seqs);
    w.rec.failed.extend(failed.into_iter().map(|t| (ctx.index, boot, t)));
    w.rec.kept.extend(kept.into_iter().map(|t| (ctx.index, boot, t)));
    Ok(None)
}

/// A power cut fell inside a flash operation of this device (see `flash.rs`).
fn power_cut(ctx: &DeviceCtx) -> bool {
    ctx.world.lock().flash[ctx.index as usize].as_ref().is_some_and(|f| f.dead)
}

/// Records the events; true when the first connect failed (the application retries).
/// Authentication challenges (MQTT 5 AUTH 0x18) go to `challenges` for the loop to answer.
fn record(ctx: &DeviceCtx, boot: u32, now: u64, events: Vec<Event>, challenges: &mut Vec<Vec<u8>>) -> bool {
    let mut connect_failed = false;
    let mut w = ctx.world.lock();
    for e in events {
        match e {
            Event::Up(session_present) => {
                if std::mem::replace(&mut w.told_up[ctx.index as usize], true) {
                    w.rec.up_down_out_of_turn.push(format!("{} told Up at {now} ms while up", ctx.name));
                }
                w.rec.ups.push((ctx.index, now));
                w.log(now, &ctx.name, "up", json!({ "session_present": session_present }));
            }
            Event::Down(d) => {
                let why = down_text(&d);
                if !std::mem::replace(&mut w.told_up[ctx.index as usize], false) {
                    w.rec.up_down_out_of_turn.push(format!("{} told Down ({why}) at {now} ms while not up", ctx.name));
                }
                w.log(now, &ctx.name, "down", json!({ "reason": why }));
                w.rec.downs.push((ctx.index, now, why));
            }
            Event::Message(m) => {
                let seq = seq_of(&m.payload);
                w.log(now, &ctx.name, "message", json!({ "topic": m.topic, "seq": seq, "dup": m.dup }));
                w.rec.device_received.push(Delivery { topic: m.topic, seq, t_ms: now, payload: m.payload, dup: m.dup, retained: m.retained });
            }
            Event::Published(token) => {
                if w.rec.cancelled.contains(&(ctx.index, boot, token)) {
                    w.rec.completed_after_cancel.push(token);
                }
                w.rec.acked.insert((ctx.index, boot, token), now);
                w.log(now, &ctx.name, "published", json!({ "token": token }));
            }
            Event::PublishFailed((token, reason)) => {
                if w.rec.cancelled.contains(&(ctx.index, boot, token)) {
                    w.rec.completed_after_cancel.push(token);
                }
                if reason == mqtt_host::KEPT_IN_STORE {
                    w.rec.kept.insert((ctx.index, boot, token));
                    w.log(now, &ctx.name, "publish_kept", json!({ "token": token }));
                    continue;
                }
                w.rec.publish_failures += 1;
                w.rec.failed.insert((ctx.index, boot, token));
                w.log(now, &ctx.name, "publish_failed", json!({ "token": token, "reason": reason }));
            }
            Event::Subscribed((token, codes)) => {
                w.rec.subscribe_refusals += codes.iter().filter(|c| **c >= 0x80).count() as u64;
                w.log(now, &ctx.name, "subscribed", json!({ "token": token, "codes": codes }));
            }
            Event::Unsubscribed((token, _)) => w.log(now, &ctx.name, "unsubscribed", json!({ "token": token })),
            Event::BrokerUp(up) => w.log(now, &ctx.name, "broker_up", json!({ "up": up })),
            Event::Link(l) => {
                let state = match l {
                    mqtt_host::LinkState::Up => "up",
                    mqtt_host::LinkState::Down => "down",
                    mqtt_host::LinkState::Connecting => "connecting",
                };
                w.log(now, &ctx.name, "link", json!({ "state": state }));
            }
            Event::ConnectFailed(why) => {
                connect_failed = true;
                w.log(now, &ctx.name, "connect_failed", json!({ "reason": why }));
                w.rec.downs.push((ctx.index, now, format!("connect failed: {why}")));
            }
            Event::Discarded(n) => {
                w.rec.discards = w.rec.discards.max(n);
                w.log(now, &ctx.name, "discarded", json!({ "total": n }));
            }
            Event::Auth((reason, data)) => {
                w.log(now, &ctx.name, "auth", json!({ "reason": reason, "bytes": data.len() }));
                if reason == 0x18 {
                    challenges.push(data);
                }
            }
            Event::Error(e) => w.log(now, &ctx.name, "error", json!({ "error": e })),
        }
    }
    connect_failed
}
