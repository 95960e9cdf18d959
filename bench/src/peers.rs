//! Throughput and latency against Mosquitto: this client, rumqttc and paho-mqtt, each in its
//! own process (so its peak RSS is its own), one publisher and one subscriber per run.
//!
//! Every payload is 100 bytes and starts with the send time (ns on the process's monotonic
//! clock, little-endian); the subscriber in the same process subtracts it from the arrival
//! time. Every publisher has `window` publishes in flight (QoS 1: PUBACKs pending; QoS 0:
//! not yet written) and as many more waiting in the client: rumqttc's publisher, as its users
//! run it, holds a request channel (its capacity, `window` here) besides its in-flight window,
//! so the other publishers keep at most 2 × `window` publishes outstanding to match (before,
//! they kept `window`, half of rumqttc's pipeline).

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

pub const PAYLOAD: usize = 100;
/// The row every ratio is taken against: rumqttc with TCP_NODELAY, as this client runs.
pub const RUMQTTC: &str = "rumqttc 0.25 (TCP_NODELAY)";
/// The subscriber gives up when nothing arrived for this long (QoS 0 may lose messages).
const IDLE_LIMIT: Duration = Duration::from_secs(5);

/// What one peer process reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRun {
    pub client: String,
    pub qos: u8,
    pub sent: u64,
    /// Messages per second from the first publish to the last completing (QoS 1: PUBACK).
    pub pub_rate: f64,
    pub received: u64,
    /// Messages per second from the subscriber's first message to its last.
    pub sub_rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub peak_rss_kib: u64,
    /// The process's CPU time (user + system, every thread: publisher and subscriber both)
    /// per message sent, in µs.
    #[serde(default)]
    pub cpu_us_per_msg: f64,
}

/// Publishes a publisher keeps outstanding: `window` in flight and `window` waiting, as
/// rumqttc's in-flight window and request channel hold them (see the module's comment).
fn outstanding(window: u16) -> usize {
    2 * usize::from(window)
}

fn stamp(epoch: Instant) -> Vec<u8> {
    let mut p = vec![b'.'; PAYLOAD];
    p[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
    p
}

fn latency_us(epoch: Instant, payload: &[u8]) -> Option<f64> {
    let sent = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    Some((epoch.elapsed().as_nanos() as u64).saturating_sub(sent) as f64 / 1000.0)
}

/// What a subscriber saw: latencies in arrival order, first and last arrival.
#[derive(Default)]
struct Arrivals {
    latencies: Vec<f64>,
    /// With `--latencies`: each arrival's time (ns since the epoch), for the file. Kept only
    /// then: 800 KB more for 100k messages would show in peak RSS.
    at: Option<Vec<u64>>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Arrivals {
    fn new(keep_times: bool) -> Arrivals {
        Arrivals { at: keep_times.then(Vec::new), ..Arrivals::default() }
    }

    fn note(&mut self, epoch: Instant, payload: &[u8]) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        if let Some(l) = latency_us(epoch, payload) {
            self.latencies.push(l);
            if let Some(at) = &mut self.at {
                at.push(now.duration_since(epoch).as_nanos() as u64);
            }
        }
    }

    /// Writes every message's arrival (ns since the epoch) and latency (µs), one per line in
    /// arrival order: where a tail comes from shows in when it happened (episodes of a few
    /// ms in which the whole pipeline slows), not in the percentile alone.
    fn write_latencies(&self, path: &Path) -> anyhow::Result<()> {
        use std::fmt::Write;
        let mut text = String::from("# arrival_ns latency_us\n");
        for (at, l) in self.at.iter().flatten().zip(&self.latencies) {
            let _ = writeln!(text, "{at} {l:.1}");
        }
        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    fn finish(mut self, client: &str, qos: u8, sent: u64, pub_elapsed: Duration, latencies: Option<&Path>) -> anyhow::Result<PeerRun> {
        if let Some(path) = latencies {
            self.write_latencies(path)?;
        }
        self.latencies.sort_by(f64::total_cmp);
        // 0 stands for "no figure" (JSON has no NaN).
        let pct = |p: f64| self.latencies.get(((self.latencies.len() as f64 * p) as usize).min(self.latencies.len().saturating_sub(1))).copied().unwrap_or(0.0);
        let received = self.latencies.len() as u64;
        let span = match (self.first, self.last) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        Ok(PeerRun {
            client: client.into(),
            qos,
            sent,
            pub_rate: sent as f64 / pub_elapsed.as_secs_f64(),
            received,
            sub_rate: if span > 0.0 { received as f64 / span } else { 0.0 },
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            peak_rss_kib: peak_rss_kib(),
            cpu_us_per_msg: cpu_seconds() * 1e6 / sent.max(1) as f64,
        })
    }
}

/// This process's CPU time so far, user + system, all threads (`/proc/self/stat` fields 14
/// and 15, in the kernel's fixed 100 Hz user ticks).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its `)` are plain.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // After `)`: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// This process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// How this client's publisher keeps its publishes outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// A `publish(..).await` future each, held in a `FuturesUnordered`.
    Futures,
    /// `post`, with completions counted off the event stream by another task.
    Post,
    /// `post` too, but each client made with `Client::new` and run by the task that takes
    /// its events (the subscriber's receiver; the publisher's completion counter): the
    /// shape of rumqttc's `AsyncClient` and `EventLoop` below, task for task.
    EventLoop,
}

/// This client: the embedded component on the board's platform (real tokio sockets).
/// `nodelay`: as the platform sets it by default; off (Nagle on) is a row of its own, to
/// compare with rumqttc's default.
pub async fn ours(port: u16, qos: u8, count: u64, window: u16, nodelay: bool, api: Api, latencies: Option<&Path>) -> anyhow::Result<PeerRun> {
    use mqtt_host::{Client, ClientEvent, ComponentFile, ConfigBuilder, Device, Subscription};
    use mqtt_platform_tokio::TokioPlatform;
    let component = ComponentFile::embedded()?;
    let level = mqtt_host::qos_from_level(qos).ok_or_else(|| anyhow::anyhow!("qos {qos}"))?;
    let connect = |id: &str| -> anyhow::Result<(Client, Events)> {
        // The same window as the other clients get; everything else as a user gets it (the
        // incoming queue and backpressure at their defaults: no tuned `queue_len`).
        let cfg = ConfigBuilder::new("127.0.0.1", id).port(port).max_inflight(window).max_queued(u32::from(window) * 2).build()?;
        let platform = if nodelay { TokioPlatform::for_config(&cfg) } else { TokioPlatform::for_config(&cfg).with_nagle() };
        let device = Device::new(&component, Box::new(platform), cfg, id)?;
        Ok(if api == Api::EventLoop {
            let (client, event_loop) = Client::new(device);
            (client, Events::Loop(event_loop))
        } else {
            let mut client = Client::spawn(device);
            let events = client.take_events();
            (client, Events::Spawned(events))
        })
    };
    let epoch = Instant::now();
    let topic = format!("bench/ours/{}", std::process::id());
    let (sub, mut events) = connect("bench-ours-sub")?;
    events.run_until(sub.connect()).await?;
    events.run_until(sub.subscribe(vec![Subscription::new(topic.as_str(), level)])).await?;
    let keep_times = latencies.is_some();
    let receiver = tokio::spawn(async move {
        let mut a = Arrivals::new(keep_times);
        while (a.latencies.len() as u64) < count {
            match tokio::time::timeout(IDLE_LIMIT, events.next()).await {
                Ok(Some(ClientEvent::Message(m))) => a.note(epoch, &m.payload),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        (a, events)
    });
    let (publisher, mut completions) = connect("bench-ours-pub")?;
    completions.run_until(publisher.connect()).await?;
    let start = Instant::now();
    let mut completions = match api {
        Api::Futures => {
            // The events (none but `Up` here) are not this publisher's concern; the handle
            // keeps the client running.
            let mut pending = FuturesUnordered::new();
            for _ in 0..count {
                if pending.len() >= outstanding(window) {
                    pending.next().await.transpose()?;
                }
                let payload = stamp(epoch);
                let (p, t) = (&publisher, &topic);
                pending.push(async move { p.publish(t, payload, level, false).await });
            }
            while let Some(r) = pending.next().await {
                r?;
            }
            completions
        }
        Api::Post | Api::EventLoop => {
            // `post` waits while `max_queued` (twice the window, as above) of its
            // publishes are outstanding.
            let done = tokio::spawn(async move {
                let mut completed = 0u64;
                while completed < count {
                    match completions.next().await {
                        Some(ClientEvent::Published(_)) => completed += 1,
                        Some(ClientEvent::PublishFailed { reason, .. }) => anyhow::bail!("a publish failed: reason {reason:#04x}"),
                        Some(ClientEvent::Refused { why, .. }) => anyhow::bail!("a publish was refused: {why}"),
                        Some(_) => {}
                        None => anyhow::bail!("the publisher stopped"),
                    }
                }
                Ok(completions)
            });
            for _ in 0..count {
                publisher.post(mqtt_host::Publish::new(topic.as_str(), stamp(epoch), level)).await?;
            }
            done.await??
        }
    };
    let pub_elapsed = start.elapsed();
    let (arrivals, mut events) = receiver.await?;
    completions.run_until(publisher.disconnect()).await;
    events.run_until(sub.disconnect()).await;
    let label = match (api, nodelay) {
        (Api::Futures, true) => "this client",
        (Api::Futures, false) => "this client (Nagle on)",
        (Api::Post, true) => "this client (post)",
        (Api::Post, false) => "this client (post, Nagle on)",
        (Api::EventLoop, true) => "this client (event loop)",
        (Api::EventLoop, false) => "this client (event loop, Nagle on)",
    };
    arrivals.finish(label, qos, count, pub_elapsed, latencies)
}

/// A client's events: its stream from `Client::spawn`'s task, or its `EventLoop`, which
/// runs the client only while polled.
enum Events {
    Spawned(mqtt_host::Events),
    Loop(mqtt_host::EventLoop),
}

impl Events {
    async fn next(&mut self) -> Option<mqtt_host::ClientEvent> {
        match self {
            Events::Spawned(e) => e.next().await,
            Events::Loop(l) => l.poll().await,
        }
    }

    /// Awaits `f` (a `connect`, `subscribe` or `disconnect`), polling the events meanwhile
    /// (an event loop's client only runs while polled); what they report is not needed.
    async fn run_until<T>(&mut self, f: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(f);
        loop {
            tokio::select! {
                r = &mut f => return r,
                e = self.next() => if e.is_none() {
                    // Stopped: the future answers (`Stopped`, or at once for `disconnect`).
                    return f.await;
                },
            }
        }
    }
}

/// rumqttc, the most used native Rust client: its event loops polled by tokio tasks.
/// `nodelay`: TCP_NODELAY on its sockets, as this client always sets (like for like); off is
/// rumqttc's default (Nagle), measured as a row of its own.
pub async fn rumqttc(port: u16, qos: u8, count: u64, window: u16, nodelay: bool, latencies: Option<&Path>) -> anyhow::Result<PeerRun> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let level = match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let options = |id: &str| {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(60)).set_inflight(window);
        o
    };
    let epoch = Instant::now();
    let topic = format!("bench/rumqttc/{}", std::process::id());
    let (sub, mut sub_loop) = AsyncClient::new(options("bench-rumqttc-sub"), usize::from(window));
    sub_loop.network_options.set_tcp_nodelay(nodelay);
    sub.subscribe(&topic, level).await?;
    // Wait for SUBACK before publishing, as the other clients do.
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await? {
            break;
        }
    }
    let keep_times = latencies.is_some();
    let receiver = tokio::spawn(async move {
        let mut a = Arrivals::new(keep_times);
        while (a.latencies.len() as u64) < count {
            match tokio::time::timeout(IDLE_LIMIT, sub_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => a.note(epoch, &p.payload),
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        a
    });
    let (publisher, mut pub_loop) = AsyncClient::new(options("bench-rumqttc-pub"), usize::from(window));
    pub_loop.network_options.set_tcp_nodelay(nodelay);
    // The event loop counts completions: PUBACKs for QoS 1, publishes written for QoS 0.
    let done = tokio::spawn(async move {
        let mut completed = 0u64;
        while completed < count {
            match pub_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) if qos == 1 => completed += 1,
                Ok(Event::Incoming(Packet::PubComp(_))) if qos == 2 => completed += 1,
                Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == 0 => completed += 1,
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("rumqttc publisher: {e}")),
            }
        }
        Ok(Instant::now())
    });
    let start = Instant::now();
    for _ in 0..count {
        publisher.publish(&topic, level, false, stamp(epoch)).await?;
    }
    let finished = done.await??;
    let arrivals = receiver.await?;
    let _ = publisher.disconnect().await;
    let _ = sub.disconnect().await;
    let label = if nodelay { RUMQTTC } else { "rumqttc 0.25 (its default: Nagle on)" };
    arrivals.finish(label, qos, count, finished - start, latencies)
}

/// Runs one peer in a child process (`mqtt-bench peer …`, or the paho script) and reads the
/// JSON line it prints.
pub fn run_child(mut cmd: std::process::Command) -> anyhow::Result<PeerRun> {
    let out = cmd.stderr(std::process::Stdio::inherit()).output()?;
    if !out.status.success() {
        anyhow::bail!("{:?} failed ({})", cmd.get_program(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().ok_or_else(|| anyhow::anyhow!("peer printed nothing"))?;
    Ok(serde_json::from_str(line)?)
}

/// A virtualenv with paho-mqtt, made on first use under `target/bench-venv`.
pub fn paho_python(target: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let venv = target.join("bench-venv");
    let python = venv.join("bin/python3");
    let has_paho = |py: &std::path::Path| std::process::Command::new(py).args(["-c", "import paho.mqtt"]).output().is_ok_and(|o| o.status.success());
    if python.exists() && has_paho(&python) {
        return Ok(python);
    }
    let ok = |mut c: std::process::Command| c.status().is_ok_and(|s| s.success());
    let mut make = std::process::Command::new("python3");
    make.args(["-m", "venv"]).arg(&venv);
    if !ok(make) {
        anyhow::bail!("python3 -m venv failed (install python3-venv)");
    }
    let mut pip = std::process::Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", "paho-mqtt==2.1.0"]);
    if !ok(pip) || !has_paho(&python) {
        anyhow::bail!("pip install paho-mqtt==2.1.0 failed");
    }
    Ok(python)
}
