//! Embedding the client in a tokio program: connect, subscribe, publish at QoS 1 (the call
//! returns when the broker acknowledged), keep many publishes in flight with `enqueue`,
//! and read the messages back. The README shows this file; CI runs it against Mosquitto.
//!
//! ```sh
//! cargo run --release -p mqtt-platform-tokio --example publish_subscribe -- 127.0.0.1 1883
//! ```

use mqtt_host::{Client, ClientEvent, ComponentFile, ConfigBuilder, Device, Publish, Qos, Subscription};
use mqtt_platform_tokio::TokioPlatform;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = args.next().map_or(Ok(1883), |p| p.parse())?;

    let component = ComponentFile::embedded()?; // precompiled at build time: ~1 ms
    let config = ConfigBuilder::new(&host, "example-sensor-1").port(port).build()?; // mqtt_as's defaults; nothing lost
    let platform = TokioPlatform::for_config(&config); // may open only the brokers the config names
    let device = Device::new(&component, Box::new(platform), config, "example")?;
    let mut client = Client::spawn(device); // runs in a tokio task
    client.connect().await?; // fails if the first attempt fails; later outages are ridden out

    client.subscribe(vec![Subscription::new("example/#", Qos::AtLeastOnce)]).await?;
    client.publish("example/one", b"returns on PUBACK", Qos::AtLeastOnce, false).await?;

    // Many in flight at once: tokens now, completions later as events. A clone of the
    // client is a handle another task can publish with.
    let other = client.clone();
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(other.enqueue(Publish::new(format!("example/many/{i}"), "queued", Qos::AtLeastOnce)).await?);
    }

    let (mut messages, mut completed) = (0, 0);
    while messages < 11 || completed < tokens.len() {
        match tokio::time::timeout(std::time::Duration::from_secs(10), client.next_event()).await? {
            Some(ClientEvent::Message(m)) => {
                messages += 1;
                println!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
            }
            Some(ClientEvent::Published(t)) if tokens.contains(&t) => completed += 1,
            Some(ClientEvent::PublishFailed { token, reason }) => anyhow::bail!("publish {token} failed: {reason:#04x}"),
            Some(_) => {}
            None => anyhow::bail!("the client stopped"),
        }
    }
    println!("{messages} messages received, {completed} enqueued publishes acknowledged");
    client.disconnect().await;
    Ok(())
}
