//! Start-up: a fresh process that connects, publishes one QoS 1 message and exits once the
//! broker acknowledged it, timed from spawn to exit by the harness. The same binary runs
//! both clients, so binary size and loading weigh alike on each.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What one start-up child reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartupRun {
    pub peak_rss_kib: u64,
    /// In-process: from `main` to the PUBACK.
    pub to_puback_us: f64,
}

/// The child's side: `client` is `ours` or `rumqttc` (with TCP_NODELAY, like for like).
pub fn child(client: &str, port: u16) -> anyhow::Result<StartupRun> {
    let begin = Instant::now();
    // The runtime a small tool would pick; both clients get the same one.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        match client {
            "ours" => ours(port).await,
            "rumqttc" => rumqttc(port).await,
            other => anyhow::bail!("unknown start-up client {other:?}"),
        }
    })?;
    Ok(StartupRun { peak_rss_kib: crate::peers::peak_rss_kib(), to_puback_us: begin.elapsed().as_secs_f64() * 1e6 })
}

async fn ours(port: u16) -> anyhow::Result<()> {
    use mqtt_host::{default_config, Client, ComponentFile, Device, Qos};
    let component = ComponentFile::embedded()?;
    let mut cfg = default_config("127.0.0.1", "bench-startup-ours");
    cfg.port = Some(port);
    let platform = mqtt_platform_tokio::TokioPlatform::for_config(&cfg);
    let client = Client::spawn(Device::new(&component, Box::new(platform), cfg, "bench-startup-ours")?);
    client.connect().await?;
    client.publish("bench/startup", b"hello", Qos::AtLeastOnce, false).await?;
    client.disconnect().await;
    Ok(())
}

async fn rumqttc(port: u16) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new("bench-startup-rumqttc", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(60));
    let (client, mut event_loop) = AsyncClient::new(options, 10);
    event_loop.network_options.set_tcp_nodelay(true);
    client.publish("bench/startup", QoS::AtLeastOnce, false, b"hello".to_vec()).await?;
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = event_loop.poll().await? {
            break;
        }
    }
    client.disconnect().await?;
    // Let the event loop write the DISCONNECT, as `ours` does before it returns.
    while !matches!(event_loop.poll().await, Err(_) | Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) {}
    Ok(())
}

/// One row: wall time from spawn to exit (median), and the child's own figures (medians).
pub struct Startup {
    pub client: &'static str,
    pub wall_ms: f64,
    pub to_puback_ms: f64,
    pub peak_rss_kib: u64,
}

/// The harness's side: `runs` children per client, alternating, against the broker on `port`.
pub fn measure(exe: &std::path::Path, port: u16, runs: usize) -> anyhow::Result<Vec<Startup>> {
    let clients = [("ours", "this client"), ("rumqttc", crate::peers::RUMQTTC)];
    let mut samples: Vec<Vec<(f64, StartupRun)>> = clients.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, (name, _)) in clients.iter().enumerate() {
            let mut cmd = std::process::Command::new(exe);
            cmd.args(["startup", "--client", name, "--port", &port.to_string()]);
            let began = Instant::now();
            let out = cmd.stderr(std::process::Stdio::inherit()).output()?;
            let wall = began.elapsed().as_secs_f64() * 1e3;
            if !out.status.success() {
                anyhow::bail!("start-up child {name} failed ({})", out.status);
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().last().ok_or_else(|| anyhow::anyhow!("start-up child printed nothing"))?;
            samples[i].push((wall, serde_json::from_str(line)?));
        }
    }
    Ok(clients
        .iter()
        .zip(samples)
        .map(|((_, label), s)| Startup {
            client: label,
            wall_ms: crate::median(s.iter().map(|(w, _)| *w).collect()),
            to_puback_ms: crate::median(s.iter().map(|(_, r)| r.to_puback_us / 1e3).collect()),
            peak_rss_kib: crate::median(s.iter().map(|(_, r)| r.peak_rss_kib as f64).collect()) as u64,
        })
        .collect())
}
