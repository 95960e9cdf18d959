//! rumqttc's shape: `Client::new` gives a handle and the event loop that runs the client in
//! whichever task polls it (no task of its own, and no hop between tasks for each batch
//! of events). A task connects, subscribes and publishes with `post`, which returns at once;
//! this one polls the loop, which is what moves the client, and counts the messages that
//! come back and the completions (`Published`). CI runs it against Mosquitto.
//!
//! ```sh
//! cargo run --release -p mqtt-platform-tokio --example event_loop -- 127.0.0.1 1883 1000
//! ```

use std::time::Duration;

use mqtt_host::{Client, ClientEvent, ComponentFile, ConfigBuilder, Device, Publish, Qos, Subscription};
use mqtt_platform_tokio::TokioPlatform;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = args.next().map_or(Ok(1883), |p| p.parse())?;
    let count: usize = args.next().map_or(Ok(1000), |n| n.parse())?;

    let component = ComponentFile::embedded()?;
    let config = ConfigBuilder::new(&host, "example-event-loop").port(port).build()?;
    let platform = TokioPlatform::for_config(&config);
    let device = Device::new(&component, Box::new(platform), config, "example")?;
    let (client, mut event_loop) = Client::new(device);

    // The handle's calls are answered while the loop is polled, here by the loop below.
    let publisher = client.clone();
    let publishing = tokio::spawn(async move {
        publisher.connect().await?;
        publisher.subscribe(vec![Subscription::new("example/loop/#", Qos::AtLeastOnce)]).await?;
        for i in 0..count {
            // Waits only while `max-queued` posts are outstanding.
            publisher.post(Publish::new(format!("example/loop/{i}"), "posted", Qos::AtLeastOnce)).await?;
        }
        anyhow::Ok(())
    });

    let (mut messages, mut acknowledged) = (0, 0);
    while messages < count || acknowledged < count {
        match tokio::time::timeout(Duration::from_secs(10), event_loop.poll()).await? {
            Some(ClientEvent::Message(_)) => messages += 1,
            Some(ClientEvent::Published(_)) => acknowledged += 1,
            Some(ClientEvent::PublishFailed { token, reason }) => anyhow::bail!("publish {token} failed: {reason:#04x}"),
            Some(ClientEvent::Refused { token, why }) => anyhow::bail!("publish {token} refused: {why}"),
            Some(_) => {}
            None => anyhow::bail!("the client stopped"),
        }
    }
    publishing.await??;
    println!("{count} posted: {acknowledged} acknowledged, {messages} received");

    // The DISCONNECT goes out while the loop is polled.
    tokio::select! {
        _ = client.disconnect() => {}
        _ = async { while event_loop.poll().await.is_some() {} } => {}
    }
    Ok(())
}
