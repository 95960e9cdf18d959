//! The real-outage rig: Mosquitto in one network namespace, the board in another, joined by a
//! veth pair with addresses made here; the link can go down, or drop every packet with the
//! link still up (nftables). Needs root.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Killed;

pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

pub fn must(args: &[&str]) {
    assert!(sh(args), "command failed: {}", args.join(" "));
}

/// Two namespaces and a veth pair; removed on drop.
pub struct Rig {
    pub broker_ns: String,
    pub client_ns: String,
    pub client_if: String,
    pub broker_ip: String,
}

impl Rig {
    pub fn new() -> Option<Rig> {
        let n = std::process::id() % 10_000;
        let (b, c) = (format!("mqb{n}"), format!("mqc{n}"));
        if !sh(&["ip", "netns", "add", &b]) {
            return None;
        }
        let rig = Rig { broker_ns: b.clone(), client_ns: c.clone(), client_if: format!("vc{n}"), broker_ip: format!("10.77.{}.1", n % 250) };
        let bif = format!("vb{n}");
        must(&["ip", "netns", "add", &c]);
        must(&["ip", "link", "add", &bif, "type", "veth", "peer", "name", &rig.client_if]);
        must(&["ip", "link", "set", &bif, "netns", &b]);
        must(&["ip", "link", "set", &rig.client_if, "netns", &c]);
        let client_ip = format!("10.77.{}.2/24", n % 250);
        must(&["ip", "-n", &b, "addr", "add", &format!("{}/24", rig.broker_ip), "dev", &bif]);
        must(&["ip", "-n", &c, "addr", "add", &client_ip, "dev", &rig.client_if]);
        for (ns, dev) in [(&b, &bif), (&c, &rig.client_if)] {
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        Some(rig)
    }

    pub fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    pub fn link(&self, up: bool) {
        must(&["ip", "-n", &self.client_ns, "link", "set", &self.client_if, if up { "up" } else { "down" }]);
    }

    /// Drop every packet on the client's interface, with the link still up.
    pub fn blackhole(&self, on: bool) {
        let ns = &self.client_ns;
        if on {
            must(&["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "mqtt_test"]);
            for hook in ["input", "output"] {
                let chain = format!("{{ type filter hook {hook} priority 0 ; }}");
                must(&["ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "mqtt_test", hook, &chain]);
                let dir = if hook == "input" { "iifname" } else { "oifname" };
                must(&["ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "mqtt_test", hook, dir, &self.client_if, "drop"]);
            }
        } else {
            must(&["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "mqtt_test"]);
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        sh(&["ip", "netns", "del", &self.broker_ns]);
        sh(&["ip", "netns", "del", &self.client_ns]);
    }
}

pub fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

pub fn start_broker(rig: &Rig, dir: &std::path::Path) -> Killed {
    let conf = dir.join("mosquitto.conf");
    // Persistence on, so a restart keeps the observer's and the client's sessions, and a
    // queue deep enough that Mosquitto never drops QoS 1 for a slow observer.
    std::fs::write(
        &conf,
        format!("listener 1883 {}\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\nsys_interval 1\n", rig.broker_ip, dir.display()),
    )
    .unwrap();
    let child = rig.exec(&rig.broker_ns, &["mosquitto", "-c", conf.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    Killed(child)
}

pub fn not_root() -> bool {
    // `id -u` rather than libc, to keep this crate free of unsafe code.
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() != "0").unwrap_or(true)
}
