//! Real outages on a real network: Mosquitto (and a `mosquitto_sub` observer) in one network
//! namespace, `mqtt-board pub` in another, joined by a veth pair with addresses this test
//! creates. The link is taken down for 5 s and 30 s, then 100 % of packets are dropped for
//! 20 s with the link still up (nftables), then Mosquitto restarts. Every QoS 1 message
//! published across the outages must reach the observer, in order.
//!
//! Needs root (network namespaces) and nftables; where namespaces are not permitted the test
//! says so on stderr and does nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn sh(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    assert!(sh(args), "command failed: {}", args.join(" "));
}

/// Two namespaces and a veth pair; removed on drop.
struct Rig {
    broker_ns: String,
    client_ns: String,
    client_if: String,
    broker_ip: String,
}

impl Rig {
    fn new() -> Option<Rig> {
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

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    fn link(&self, up: bool) {
        must(&["ip", "-n", &self.client_ns, "link", "set", &self.client_if, if up { "up" } else { "down" }]);
    }

    /// Drop every packet on the client's interface, with the link still up.
    fn blackhole(&self, on: bool) {
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

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn start_broker(rig: &Rig, dir: &std::path::Path) -> Killed {
    let conf = dir.join("mosquitto.conf");
    // Persistence on, so a restart keeps the observer's and the client's sessions, and a
    // queue deep enough that Mosquitto never drops QoS 1 for a slow observer.
    std::fs::write(
        &conf,
        format!("listener 1883 {}\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\n", rig.broker_ip, dir.display()),
    )
    .unwrap();
    let child = rig.exec(&rig.broker_ns, &["mosquitto", "-c", conf.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    Killed(child)
}

#[test]
fn qos1_survives_link_drops_silent_loss_and_a_broker_restart_on_a_real_network() {
    if not_root() {
        eprintln!("SKIPPED: network namespaces need root; the real-outage rig did not run");
        return;
    }
    let Some(rig) = Rig::new() else {
        eprintln!("SKIPPED: network namespaces are not permitted here; the real-outage rig did not run");
        return;
    };
    let dir = std::env::temp_dir().join(format!("mqtt-rig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut broker = start_broker(&rig, &dir);
    let mut observer = rig
        .exec(&rig.broker_ns, &["mosquitto_sub", "-h", &rig.broker_ip, "-t", "rig/#", "-q", "1", "-i", "observer", "-c", "-F", "%U %p"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Collect the observer's lines as they come, so the end of the test can wait for the
    // messages Mosquitto still has queued for it (after its own reconnect) instead of
    // guessing a delay.
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, stdout) = (lines.clone(), observer.stdout.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // 10 messages a second for 100 s: 1000 QoS 1 messages across every outage below.
    let total = 1000;
    let board = rig
        .exec(&rig.client_ns, &[env!("CARGO_BIN_EXE_mqtt-board"), "pub", "-H", &rig.broker_ip, "-t", "rig/seq", "-q", "1", "--interval", "100ms"])
        .args(["--count", &total.to_string(), "-i", "board-1", "--clean", "false", "-k", "10", "--response-time-ms", "2000", "--iface", &rig.client_if, "-v"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut board = Killed(board);
    let start = Instant::now();
    let at = |s: u64| {
        let d = Duration::from_secs(s).saturating_sub(start.elapsed());
        std::thread::sleep(d);
    };
    let mut returns = Vec::new();
    at(5);
    rig.link(false);
    at(10);
    rig.link(true);
    returns.push(("link down 5 s", now_s()));
    at(20);
    rig.link(false);
    at(50);
    rig.link(true);
    returns.push(("link down 30 s", now_s()));
    at(60);
    rig.blackhole(true);
    at(80);
    rig.blackhole(false);
    returns.push(("100 % loss 20 s", now_s()));
    at(85);
    // A graceful restart (SIGTERM): Mosquitto saves its sessions, as a service restart does.
    let _ = Command::new("kill").arg(broker.0.id().to_string()).status();
    let _ = broker.0.wait();
    at(88);
    broker = start_broker(&rig, &dir);
    returns.push(("broker restart", now_s()));
    let status = board.0.wait().unwrap();
    let distinct = |lines: &[String]| lines.iter().filter_map(|l| l.split_once(' ')?.1.parse::<u32>().ok()).collect::<std::collections::BTreeSet<_>>().len();
    let waited = Instant::now();
    while distinct(&lines.lock().unwrap()) < total as usize && waited.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM so mosquitto_sub flushes what it printed.
    let _ = Command::new("kill").arg(observer.id().to_string()).status();
    drop(broker);
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut e) = board.0.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "mqtt-board pub failed: {stderr}");
    let _ = observer.wait();
    let _ = reader.join();
    let out = lines.lock().unwrap().clone();
    let got: Vec<(f64, u32)> = out.iter().filter_map(|l| {
        let (t, p) = l.split_once(' ')?;
        Some((t.parse().ok()?, p.parse().ok()?))
    }).collect();
    let mut first = std::collections::BTreeMap::new();
    for (t, seq) in &got {
        first.entry(*seq).or_insert(*t);
    }
    let lost: Vec<u32> = (0..total).filter(|s| !first.contains_key(s)).collect();
    let duplicates = got.len() - first.len();
    let mut order: Vec<u32> = Vec::new();
    for (_, seq) in &got {
        if !order.contains(seq) {
            order.push(*seq);
        }
    }
    let in_order = order.windows(2).all(|w| w[0] < w[1]);
    for (what, back) in &returns {
        let resumed = got.iter().map(|(t, _)| *t).filter(|t| t > back).fold(f64::INFINITY, f64::min);
        eprintln!("{what}: first delivery {:.2} s after recovery", resumed - back);
    }
    eprintln!("{} delivered, {} lost, {} duplicates, in order: {in_order}", first.len(), lost.len(), duplicates);
    assert!(lost.is_empty(), "lost {:?}\nboard stderr:\n{stderr}", &lost[..lost.len().min(20)]);
    assert!(in_order, "first deliveries out of order");
    let _ = std::fs::remove_dir_all(&dir);
}

fn not_root() -> bool {
    // `id -u` rather than libc, to keep this crate free of unsafe code.
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() != "0").unwrap_or(true)
}
