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

/// A CA and a server certificate for 127.0.0.1, written as PEM files in `dir`.
fn make_certs(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "example test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn tls() {
    let port = mosquitto_launcher::free_port().unwrap();
    let tmp = tempfile::Builder::new().prefix("mqtt-platform-tls-").tempdir().unwrap();
    let (ca, cert, key) = make_certs(tmp.path());
    let conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n", ca.display(), cert.display(), key.display());
    let _broker = Mosquitto::start_with_config(port, &conf, tmp).unwrap_or_else(|e| panic!("{e}"));
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
