//! Publishing over TLS: the broker's certificate checked against a CA file, with the name
//! the client connects to. CI runs it against a Mosquitto with a generated CA.
//!
//! ```sh
//! cargo run --release -p mqtt-platform-tokio --example tls -- broker.example 8883 ca.pem
//! ```

use mqtt_host::{Client, ComponentFile, ConfigBuilder, Device, Qos, TlsParams};
use mqtt_platform_tokio::TokioPlatform;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = args.next().map_or(Ok(8883), |p| p.parse())?;
    let ca_file = args.next();

    let tls = TlsParams {
        server_name: host.clone(),
        ca_file,                // None: the system's roots
        client_cert_file: None, // mutual TLS: a certificate and its key
        client_key_file: None,
        alpn: Vec::new(), // AWS IoT Core on port 443: vec!["x-amzn-mqtt-ca".into()]
    };
    let config = ConfigBuilder::new(&host, "example-tls").port(port).tls(tls).build()?;
    let platform = TokioPlatform::for_config(&config);
    let client = Client::spawn(Device::new(&ComponentFile::embedded()?, Box::new(platform), config, "tls")?);
    // A failed handshake or a certificate the CA did not sign fails the first connect.
    client.connect().await?;
    client.publish("example/tls", b"sealed", Qos::AtLeastOnce, false).await?;
    println!("published over TLS to {host}:{port}");
    client.disconnect().await;
    Ok(())
}
