//! Riding out an outage: publish a reading every 100 ms at QoS 1 while the broker goes away
//! and comes back. Nothing is lost and the application does nothing about it: publishes
//! made while the broker is away wait in the client and go out when it is back; the events
//! say what happened. CI runs it against a Mosquitto that it restarts half way through.
//!
//! ```sh
//! cargo run --release -p mqtt-platform-tokio --example through_an_outage -- 127.0.0.1 1883 50
//! ```

use std::time::Duration;

use mqtt_host::{Client, ClientEvent, ComponentFile, ConfigBuilder, Device, Publish, Qos};
use mqtt_platform_tokio::TokioPlatform;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = args.next().map_or(Ok(1883), |p| p.parse())?;
    let count: usize = args.next().map_or(Ok(50), |n| n.parse())?;

    // A short response time and backoff so that a test's outage is over quickly; the
    // defaults (mqtt_as's) suit a device on WiFi.
    let config = ConfigBuilder::new(&host, "example-outage").port(port).keepalive_secs(10).response_time_ms(2_000).backoff_max_ms(500).build()?;
    let platform = TokioPlatform::for_config(&config);
    let mut client = Client::spawn(Device::new(&ComponentFile::embedded()?, Box::new(platform), config, "outage")?);
    client.connect().await?;

    let (mut tokens, mut acknowledged, mut downs, mut ups) = (Vec::new(), 0, 0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged < count {
        tokio::select! {
            _ = tick.tick(), if tokens.len() < count => {
                let reading = format!("reading {}", tokens.len());
                tokens.push(client.enqueue(Publish::new("example/outage", reading, Qos::AtLeastOnce)).await?);
            }
            event = client.next_event() => match event {
                Some(ClientEvent::Published(t)) if tokens.contains(&t) => acknowledged += 1,
                Some(ClientEvent::PublishFailed { token, reason }) => anyhow::bail!("publish {token} failed: {reason:#04x}"),
                Some(ClientEvent::Down(why)) => {
                    downs += 1;
                    println!("down: {why:?} (publishing goes on)");
                }
                Some(ClientEvent::Up { session_present }) => {
                    ups += 1;
                    println!("up (session present: {session_present})");
                }
                Some(_) => {}
                None => anyhow::bail!("the client stopped"),
            },
            _ = tokio::time::sleep_until(deadline) => anyhow::bail!("only {acknowledged} of {count} acknowledged after 60 s"),
        }
    }
    println!("{count} published, {acknowledged} acknowledged; down {downs} time(s), up again {ups} time(s)");
    client.disconnect().await;
    Ok(())
}
