//! The bare-metal RISC-V board in QEMU against a real Mosquitto: the component on wasmtime's
//! Pulley interpreter with no OS, smoltcp over virtio-net, QEMU's user-mode network between
//! them. What the board says it received is checked against an independent subscriber
//! (`mosquitto_sub`) that saw every message at the broker.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Child;
use std::sync::OnceLock;
use std::time::Duration;

use mosquitto_launcher::Mosquitto;
use mqtt_riscv_virt::{build_firmware, default_target_dir, erased_flash, Arch, Board, Launch};

/// Built once per core for all the tests of this file.
fn firmware(arch: Arch) -> PathBuf {
    static RV32: OnceLock<PathBuf> = OnceLock::new();
    static RV64: OnceLock<PathBuf> = OnceLock::new();
    let built = match arch {
        Arch::Rv32 => &RV32,
        Arch::Rv64 => &RV64,
    };
    built.get_or_init(|| build_firmware(&default_target_dir(), arch).expect("building the firmware")).clone()
}

fn boot(arch: Arch, bootargs: String) -> Board {
    Board::start(&firmware(arch), &Launch { bootargs, arch, ..Launch::default() }).unwrap()
}

/// Each scenario below on both cores: RV32IMAC (the microcontroller class, `pulley32`) and
/// RV64GC (`pulley64`).
macro_rules! on_both_cores {
    ($($scenario:ident),* $(,)?) => {
        mod rv32 {
            $(#[test]
            fn $scenario() {
                super::$scenario(super::Arch::Rv32)
            })*
        }
        mod rv64 {
            $(#[test]
            fn $scenario() {
                super::$scenario(super::Arch::Rv64)
            })*
        }
    };
}

on_both_cores!(
    every_qos1_message_is_acknowledged_and_comes_back_through_a_real_mosquitto,
    a_link_outage_mid_run_loses_nothing,
    a_broker_restart_mid_run_loses_nothing,
    no_broker_fails_within_the_limit_saying_how_far_it_got,
    a_bad_boot_setting_is_refused_naming_it,
    the_client_s_config_keys_are_boot_settings_by_the_names_every_host_uses,
    what_was_accepted_before_a_power_cut_is_delivered_by_the_next_boot,
    an_instance_that_keeps_failing_is_restarted_and_loses_nothing,
);

/// A `mosquitto_sub` at the broker, subscribed before this returns, and the number of
/// distinct messages to wait for (QoS 1 may bring some twice, after an outage).
struct Witness(Child, u32);

fn witness(broker: &Mosquitto, topic: &str, count: u32) -> Witness {
    // Counted here, not by `-C`: a duplicate would end it one message short.
    let child = mosquitto_launcher::observer(broker.port, topic, 1_000_000, 90, &[]).unwrap_or_else(|e| panic!("{e}"));
    Witness(child, count)
}

/// The distinct counters the witness saw, once it has them all (or has given up).
fn witnessed(Witness(mut child, count): Witness) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.expect("mosquitto_sub's output");
        seen.insert(line.parse().unwrap_or_else(|_| panic!("not a counter: {line:?}")));
        if seen.len() == count as usize {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

fn every_qos1_message_is_acknowledged_and_comes_back_through_a_real_mosquitto(arch: Arch) {
    let broker = Mosquitto::start("").unwrap();
    let topic = "riscv-virt/plain";
    let sub = witness(&broker, topic, 20);
    let bootargs = format!("port={} count=20 interval-ms=20 client_id=plain topic={topic} limit-s=60", broker.port);
    let board = boot(arch, bootargs);
    let (status, console) = board.wait(Duration::from_secs(90)).unwrap();
    assert!(status.success(), "{console}");
    assert!(console.contains("DONE published=20 acknowledged=20 received=20 duplicates=0"), "{console}");
    assert_eq!(witnessed(sub), (0..20).collect(), "what the broker delivered to another subscriber");
}

fn a_link_outage_mid_run_loses_nothing(arch: Arch) {
    let broker = Mosquitto::start("").unwrap();
    let topic = "riscv-virt/outage";
    let sub = witness(&broker, topic, 100);
    let bootargs = format!("port={} count=100 interval-ms=50 client_id=outage topic={topic} limit-s=60", broker.port);
    let mut board = boot(arch, bootargs);
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

fn a_broker_restart_mid_run_loses_nothing(arch: Arch) {
    // Mosquitto keeps its sessions over the restart (as a service does): in a directory it
    // can write to, as it drops to its own user when started as root.
    let keep = tempfile::tempdir().unwrap();
    std::fs::set_permissions(keep.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let broker = Mosquitto::start(&format!("persistence true\npersistence_location {}/\n", keep.path().display())).unwrap();
    let topic = "riscv-virt/restart";
    let sub = witness(&broker, topic, 100);
    let board = boot(arch, format!("port={} count=100 interval-ms=50 client_id=restart topic={topic} limit-s=60", broker.port));
    board.wait_for("up (session present: false)", Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let broker = broker.restart_gracefully().unwrap();
    let (status, console) = board.wait(Duration::from_secs(90)).unwrap();
    assert!(status.success(), "{console}");
    // The connection went with the broker; the client came back to the session it left.
    assert!(console.contains("down: DownReason::Socket"), "{console}");
    assert!(console.contains("up (session present: true)"), "{console}");
    assert!(console.contains("DONE published=100 acknowledged=100 received=100"), "{console}");
    assert_eq!(witnessed(sub), (0..100).collect(), "what the broker delivered to another subscriber");
    drop(broker);
}

fn no_broker_fails_within_the_limit_saying_how_far_it_got(arch: Arch) {
    // A port nothing listens on: the client keeps trying (refused, backing off) and holds the
    // message; the board gives up at its limit and says so.
    let port = mosquitto_launcher::free_port().unwrap();
    let board = boot(arch, format!("port={port} count=1 limit-s=3"));
    let (status, console) = board.wait(Duration::from_secs(60)).unwrap();
    assert_eq!(status.code(), Some(1), "{console}");
    assert!(console.contains("FAILED: gave up after 3 s: 1 published, 0 acknowledged, 0 of 1 received"), "{console}");
}

/// Every fortieth poll runs out of fuel at once (`fault-every`): each time the device throws the
/// instance away, makes a fresh one and hands it what the failed one held (in flight under its
/// packet ids, the subscription, the connection), as the Rust host's does.
fn an_instance_that_keeps_failing_is_restarted_and_loses_nothing(arch: Arch) {
    let broker = Mosquitto::start("").unwrap();
    let topic = "riscv-virt/faults";
    let sub = witness(&broker, topic, 60);
    let bootargs = format!("port={} count=60 interval-ms=20 client_id=faults topic={topic} limit-s=60 fault-every=40", broker.port);
    let (status, console) = boot(arch, bootargs).wait(Duration::from_secs(90)).unwrap();
    assert!(status.success(), "{console}");
    assert!(console.contains("DONE published=60 acknowledged=60 received=60"), "{console}");
    let restarts: u32 = console
        .split_once(" restarts=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no restart count: {console}"));
    assert!(restarts >= 5, "{restarts} restarts: {console}");
    assert!(console.contains("component failed in `poll`"), "{console}");
    // The board's session is mqtt_as's usual one (purged at power-up, kept from then on): a
    // fresh instance resumes it rather than purging it again.
    assert!(console.contains("up (session present: true)"), "{console}");
    assert_eq!(witnessed(sub), (0..60).collect(), "what the broker delivered to another subscriber");
}

fn a_bad_boot_setting_is_refused_naming_it(arch: Arch) {
    for (bootargs, why) in [
        ("port=1883 count=lots", "FAILED: count: `lots` is not a whole number from 0 to 4294967295"),
        ("port=1883 keepalive=forever", "FAILED: keepalive_s: `forever` is not a whole number from 0 to 65535"),
        ("port=1883 colour=blue", "FAILED: unknown setting `colour`: the demo's are"),
        ("port=1883 fault-every=0", "FAILED: fault-every: 0 would fail every poll; at least 1"),
        // Read, then refused by the client's own check, which names the key.
        ("port=1883 keepalive_s=1 response_time_ms=5000", "FAILED: the config was refused: config key `keepalive_s`: 1 s is out of range"),
    ] {
        let board = boot(arch, bootargs.into());
        let (status, console) = board.wait(Duration::from_secs(30)).unwrap();
        assert_eq!(status.code(), Some(1), "{bootargs}: {console}");
        assert!(console.contains(why), "{bootargs}: {console}");
    }
}

fn the_client_s_config_keys_are_boot_settings_by_the_names_every_host_uses(arch: Arch) {
    // MQTT 5 and a small in-flight window, by the schema's names and aliases.
    let broker = Mosquitto::start("").unwrap();
    let topic = "riscv-virt/keys";
    let sub = witness(&broker, topic, 10);
    let bootargs = format!("port={} count=10 interval-ms=0 id=keys topic={topic} v5=true max_inflight=2 keepalive_s=20", broker.port);
    let (status, console) = boot(arch, bootargs).wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{console}");
    assert!(console.contains("DONE published=10 acknowledged=10 received=10"), "{console}");
    assert_eq!(witnessed(sub), (0..10).collect());
    // Mosquitto's own record of the connection: MQTT 5 (p5), clean at first (c1), keepalive 20.
    let log = std::fs::read_to_string(broker.dir().join("mosquitto.log")).unwrap();
    assert!(log.contains(" as keys (p5, c1, k20"), "{log}");
}

fn what_was_accepted_before_a_power_cut_is_delivered_by_the_next_boot(arch: Arch) {
    let broker = Mosquitto::start("").unwrap();
    let topic = "riscv-virt/power-cut";
    let dir = tempfile::tempdir().unwrap();
    let flash = dir.path().join("flash.img");
    erased_flash(&flash).unwrap();
    let sub = witness(&broker, topic, 30);
    // First life: the cable out from the start, so every publish is accepted (kept in flash)
    // and none can leave; then the power goes (QEMU killed: nothing flushed, nothing said).
    let first = format!("port={} count=30 interval-ms=10 client_id=power-cut topic={topic} store=on limit-s=60", broker.port);
    let board = Board::start(&firmware(arch), &Launch { bootargs: first, flash: Some(flash.clone()), link_down: true, echo: false, arch }).unwrap();
    board.wait_for("published 30, every one accepted", Duration::from_secs(30)).unwrap();
    let console = board.console();
    drop(board);
    assert!(!console.contains("up (session"), "the first life never reached the broker:\n{console}");
    // Second life on the same flash, cable in, nothing new to publish: what the first
    // accepted goes out and is acknowledged.
    let second = format!("port={} count=0 client_id=power-cut topic={topic} store=on limit-s=60", broker.port);
    let board = Board::start(&firmware(arch), &Launch { bootargs: second, flash: Some(flash), link_down: false, echo: false, arch }).unwrap();
    let (status, console) = board.wait(Duration::from_secs(90)).unwrap();
    assert!(status.success(), "{console}");
    assert!(console.contains("restored=30"), "{console}");
    assert_eq!(witnessed(sub), (0..30).collect(), "what the broker delivered to another subscriber");
}
