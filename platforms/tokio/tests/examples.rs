//! Every example runs against a real Mosquitto: `cargo test` builds examples, so these run
//! the very files users read (the README shows `publish_subscribe`).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use mosquitto_launcher::Mosquitto;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|deps| deps.parent()).unwrap().join("examples").join(name);
    assert!(path.exists(), "{} was not built: `cargo test -p mqtt-platform-tokio` builds examples, `--test examples` alone does not", path.display());
    path
}

fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn publish_subscribe() {
    let broker = Mosquitto::start("").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(example("publish_subscribe")).args(["127.0.0.1", &broker.port.to_string()]).output().unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("11 messages received, 10 enqueued publishes acknowledged"), "{stdout}");
}

/// rumqttc's shape: the application polls the event loop that runs the client.
#[test]
fn event_loop() {
    let broker = Mosquitto::start("").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(example("event_loop")).args(["127.0.0.1", &broker.port.to_string(), "2000"]).output().unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("2000 posted: 2000 acknowledged, 2000 received"), "{stdout}");
}

/// Mosquitto is killed and started again while the example publishes: every reading is
/// acknowledged, and the example saw the broker go and come back.
#[test]
fn through_an_outage() {
    let broker = Mosquitto::start("").unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(example("through_an_outage"))
        .args(["127.0.0.1", &broker.port.to_string(), "40"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let broker = broker.restart().unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap();
    drop(broker);
    let stdout = succeeded(&out);
    assert!(stdout.contains("40 published, 40 acknowledged;"), "{stdout}");
    assert!(!stdout.contains("down 0 time"), "the restart must have been noticed: {stdout}");
}

#[test]
fn tls() {
    let port = mosquitto_launcher::free_port().unwrap();
    let tmp = tempfile::Builder::new().prefix("mqtt-platform-tls-").tempdir().unwrap();
    let certs = mosquitto_launcher::tls_certs(tmp.path(), "example").unwrap();
    let ca = certs.ca.clone();
    let _broker = Mosquitto::start_with_config(port, &certs.listener(port), tmp).unwrap_or_else(|e| panic!("{e}"));
    let run = |ca: Option<&std::path::Path>| {
        let mut cmd = Command::new(example("tls"));
        cmd.args(["127.0.0.1", &port.to_string()]);
        if let Some(ca) = ca {
            cmd.arg(ca);
        }
        cmd.output().unwrap()
    };
    let stdout = succeeded(&run(Some(&ca)));
    assert!(stdout.contains("published over TLS"), "{stdout}");
    // Without the CA (the system's roots) the broker's certificate is refused, and the
    // example says why it did not connect.
    let refused = run(None);
    assert!(!refused.status.success(), "a certificate from an unknown CA must not connect");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("TLS failed") && err.contains("UnknownIssuer"), "the error names the reason: {err}");
}
