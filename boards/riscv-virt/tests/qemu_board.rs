//! The bare-metal RISC-V board in QEMU against a real Mosquitto: the component on wasmtime's
//! Pulley interpreter with no OS, smoltcp over virtio-net, QEMU's user-mode network between
//! them. What the board says it received is checked against an independent subscriber
//! (`mosquitto_sub`) that saw every message at the broker.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use mosquitto_launcher::Mosquitto;
use mqtt_riscv_virt::{build_firmware, default_target_dir, Board};

/// Built once for all the tests of this file.
fn firmware() -> PathBuf {
    static FIRMWARE: OnceLock<PathBuf> = OnceLock::new();
    FIRMWARE.get_or_init(|| build_firmware(&default_target_dir()).expect("building the firmware")).clone()
}

/// `mosquitto_sub` on `topic` at QoS 1 until it has `count` messages.
fn witness(broker: &Mosquitto, topic: &str, count: u32) -> Child {
    let child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", topic, "-q", "1", "-C", &count.to_string(), "-W", "90"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting mosquitto_sub (apt-get install mosquitto-clients)");
    // Subscribed before the board publishes: mosquitto_sub says nothing when it is, so give
    // it the time a local subscribe takes, many times over.
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn witnessed(child: Child) -> BTreeSet<u32> {
    let out = child.wait_with_output().expect("mosquitto_sub");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.parse().unwrap_or_else(|_| panic!("not a counter: {l:?}"))).collect()
}

#[test]
fn every_qos1_message_is_acknowledged_and_comes_back_through_a_real_mosquitto() {
    let broker = Mosquitto::start("").unwrap();
    let topic = "riscv-virt/plain";
    let sub = witness(&broker, topic, 20);
    let bootargs = format!("port={} count=20 interval-ms=20 client-id=plain topic={topic} limit-s=60", broker.port);
    let board = Board::start(&firmware(), &bootargs, false).unwrap();
    let (status, console) = board.wait(Duration::from_secs(90)).unwrap();
    assert!(status.success(), "{console}");
    assert!(console.contains("DONE published=20 acknowledged=20 received=20 duplicates=0"), "{console}");
    assert_eq!(witnessed(sub), (0..20).collect(), "what the broker delivered to another subscriber");
}

#[test]
fn a_link_outage_mid_run_loses_nothing() {
    let broker = Mosquitto::start("").unwrap();
    let topic = "riscv-virt/outage";
    let sub = witness(&broker, topic, 100);
    let bootargs = format!("port={} count=100 interval-ms=50 client-id=outage topic={topic} limit-s=60", broker.port);
    let mut board = Board::start(&firmware(), &bootargs, false).unwrap();
    board.wait_for("up (session present: false)", Duration::from_secs(30)).unwrap();
    // A second in: publishing, with messages on their way both ways.
    std::thread::sleep(Duration::from_secs(1));
    board.set_link(false).unwrap();
    board.wait_for("link down", Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    board.set_link(true).unwrap();
    let (status, console) = board.wait(Duration::from_secs(90)).unwrap();
    assert!(status.success(), "{console}");
    // The client saw the link go, rode it out, and came back to the session it left.
    assert!(console.contains("down: DownReason::LinkLost"), "{console}");
    assert!(console.contains("up (session present: true)"), "{console}");
    assert!(console.contains("DONE published=100 acknowledged=100 received=100"), "{console}");
    assert_eq!(witnessed(sub), (0..100).collect(), "what the broker delivered to another subscriber");
}

#[test]
fn no_broker_fails_within_the_limit_saying_how_far_it_got() {
    // A port nothing listens on: the client keeps trying (refused, backing off) and holds the
    // message; the board gives up at its limit and says so.
    let port = mosquitto_launcher::free_port().unwrap();
    let board = Board::start(&firmware(), &format!("port={port} count=1 limit-s=3"), false).unwrap();
    let (status, console) = board.wait(Duration::from_secs(60)).unwrap();
    assert_eq!(status.code(), Some(1), "{console}");
    assert!(console.contains("FAILED: gave up after 3 s: 1 published, 0 acknowledged, 0 of 1 received"), "{console}");
}

#[test]
fn a_bad_boot_setting_is_refused_naming_it() {
    let board = Board::start(&firmware(), "port=1883 count=lots", false).unwrap();
    let (status, console) = board.wait(Duration::from_secs(30)).unwrap();
    assert_eq!(status.code(), Some(1), "{console}");
    assert!(console.contains("FAILED: count: `lots` is not a count"), "{console}");
}
