//! Real outages on a real network: Mosquitto (and a `mosquitto_sub` observer) in one network
//! namespace, `mqtt-board pub` in another, joined by a veth pair with addresses this test
//! creates. The link is taken down for 5 s and 30 s, then 100 % of packets are dropped for
//! 20 s with the link still up (nftables), then Mosquitto restarts. Every QoS 1 message
//! published across the outages must reach the observer, in order; Mosquitto's `$SYS` drop
//! counter says whether the broker itself dropped anything, so a loss is blamed on the
//! right side.
//!
//! Meanwhile `mqtt-board record` watches the client's interface and writes what it saw as a
//! scenario; the faults it cannot see (the silent link, the restart) are added to it, and
//! the simulator replays it: its verdict must match the rig's.
//!
//! Needs root (network namespaces) and nftables, so it is `#[ignore]`d in a plain `cargo test`
//! and `.ci/run` runs it explicitly, as root (`cargo test -p mqtt-board --test netns_outages
//! -- --ignored`). Run that way it fails, never skips, where it cannot build the rig: a green
//! run means the rig ran.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::rig::{not_root, now_s, start_broker, Rig};
use support::Killed;

mod support;

#[test]
#[ignore = "needs root and network namespaces; .ci/run runs it explicitly as root"]
fn qos1_survives_link_drops_silent_loss_and_a_broker_restart_on_a_real_network() {
    assert!(!not_root(), "the real-outage rig needs root (network namespaces, nftables)");
    let rig = Rig::new().expect("network namespaces are not permitted here: the real-outage rig cannot run");
    let dir = std::env::temp_dir().join(format!("mqtt-rig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Mosquitto started as root drops to its own user: without this it cannot write its
    // persistence file here, and a restart forgets every session (seen: the client's CONNACK
    // after the restart said session present: false, and messages Mosquitto had accepted
    // for the observer were gone whenever the timing was unlucky).
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut broker = start_broker(&rig, &dir);
    let mut observer = rig
        .exec(&rig.broker_ns, &["mosquitto_sub", "-h", &rig.broker_ip, "-t", "rig/#", "-t", DROPPED, "-q", "1", "-i", "observer", "-c", "-F", "%U %t %p"])
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
    let recorded = dir.join("recorded.toml");
    let recorder = rig
        .exec(&rig.client_ns, &[env!("CARGO_BIN_EXE_mqtt-board"), "record", "--iface", &rig.client_if, "--out", recorded.to_str().unwrap()])
        .args(["--every", "100ms", "-k", "10", "--response-time-ms", "2000", "--clean", "false"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut recorder = Killed(recorder);
    // 10 messages a second for 100 s: 1000 QoS 1 messages across every outage below.
    let total = 1000;
    let board = rig
        .exec(&rig.client_ns, &[env!("CARGO_BIN_EXE_mqtt-board"), "pub", "-H", &rig.broker_ip, "-t", "rig/seq", "-q", "1", "--interval", "100ms"])
        .args(["--count", &total.to_string(), "-i", "board-1", "--clean", "false", "-k", "10", "--response-time-ms", "2000", "--iface", &rig.client_if, "-d"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut board = Killed(board);
    // The board's `-d` events (and packets), timestamped as they come, for the time to detect
    // each fault.
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(f64, String)>::new()));
    let event_reader = {
        let (events, stderr) = (events.clone(), board.0.stderr.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                events.lock().unwrap().push((now_s(), line));
            }
        })
    };
    let start = Instant::now();
    let at = |s: u64| {
        let d = Duration::from_secs(s).saturating_sub(start.elapsed());
        std::thread::sleep(d);
    };
    // (fault, when it began, when the network was whole again)
    let mut faults = Vec::new();
    at(5);
    let began = now_s();
    rig.link(false);
    at(10);
    rig.link(true);
    faults.push(("link down 5 s", began, now_s()));
    at(20);
    let began = now_s();
    rig.link(false);
    at(50);
    rig.link(true);
    faults.push(("link down 30 s", began, now_s()));
    at(60);
    let began = now_s();
    rig.blackhole(true);
    at(80);
    rig.blackhole(false);
    faults.push(("100 % loss 20 s", began, now_s()));
    at(85);
    let began = now_s();
    // A graceful restart (SIGTERM): Mosquitto saves its sessions, as a service restart does.
    let _ = Command::new("kill").arg(broker.0.id().to_string()).status();
    let _ = broker.0.wait();
    at(88);
    broker = start_broker(&rig, &dir);
    faults.push(("broker restart", began, now_s()));
    let status = board.0.wait().unwrap();
    let _ = Command::new("kill").args(["-INT", &recorder.0.id().to_string()]).status();
    let recorder_status = recorder.0.wait().unwrap();
    let seqs = |lines: &[String]| {
        lines.iter().filter_map(|l| parse_line(l)).filter(|(_, t, _)| t == "rig/seq").filter_map(|(_, _, p)| p.parse::<u32>().ok()).collect::<Vec<_>>()
    };
    let distinct = |lines: &[String]| seqs(lines).into_iter().collect::<std::collections::BTreeSet<_>>().len();
    let waited = Instant::now();
    while distinct(&lines.lock().unwrap()) < total as usize && waited.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM so mosquitto_sub flushes what it printed.
    let _ = Command::new("kill").arg(observer.id().to_string()).status();
    drop(broker);
    let _ = event_reader.join();
    let events = events.lock().unwrap().clone();
    let stderr: String = events.iter().map(|(_, l)| format!("{l}\n")).collect();
    assert!(status.success(), "mqtt-board pub failed: {stderr}");
    let _ = observer.wait();
    let _ = reader.join();
    let out = lines.lock().unwrap().clone();
    let got: Vec<(f64, u32)> =
        out.iter().filter_map(|l| parse_line(l)).filter(|(_, t, _)| t == "rig/seq").filter_map(|(at, _, p)| Some((at, p.parse().ok()?))).collect();
    // The counter restarts with the broker: the most it reached in each life, summed, is a
    // lower bound; any non-zero value means Mosquitto dropped messages itself.
    let broker_dropped: u64 =
        out.iter().filter_map(|l| parse_line(l)).filter(|(_, t, _)| t == DROPPED).filter_map(|(_, _, p)| p.parse::<u64>().ok()).max().unwrap_or(0);
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
    for (what, began, back) in &faults {
        // `-d` lines are "TIME EVENT": the event after the board's own timestamp.
        let is_down = |l: &str| l.split_once(' ').is_some_and(|(_, event)| event.starts_with("down"));
        let detected = events.iter().find(|(t, l)| t >= began && is_down(l)).map(|(t, _)| t - began);
        let resumed = got.iter().map(|(t, _)| *t).filter(|t| t > back).fold(f64::INFINITY, f64::min);
        let detected = detected.map_or("no down reported (already down or rode it out)".to_string(), |d| format!("down reported after {d:.2} s"));
        eprintln!("{what}: {detected}; first delivery {:.2} s after recovery", resumed - back);
    }
    eprintln!("rig: {} delivered, {} lost, {} duplicates, in order: {in_order}; Mosquitto dropped {broker_dropped}", first.len(), lost.len(), duplicates);
    // The rig's premise: Mosquitto kept the sessions over its restart.
    let restart_began = faults[3].1;
    assert!(
        !events.iter().any(|(t, l)| *t >= restart_began && l.contains("session present: false")),
        "Mosquitto came back without the client's session: its persistence did not work\nboard stderr:\n{stderr}"
    );
    assert!(lost.is_empty(), "lost {:?} (Mosquitto's own drop counter: {broker_dropped})\nboard stderr:\n{stderr}", &lost[..lost.len().min(20)]);
    assert_eq!(broker_dropped, 0, "Mosquitto dropped messages itself");
    assert!(in_order, "first deliveries out of order");

    // The same outage in the simulator: what `record` saw, plus what it cannot see.
    assert!(recorder_status.success(), "mqtt-board record failed");
    let text = std::fs::read_to_string(&recorded).unwrap();
    let seen = mqtt_sim::scenario::Scenario::parse(&text).unwrap_or_else(|e| panic!("recorded scenario: {e}\n{text}"));
    let downs: Vec<(f64, f64)> = seen
        .fault
        .iter()
        .filter_map(|f| match f {
            mqtt_sim::scenario::Fault::LinkDown { at_s, for_s } => Some((*at_s, *for_s)),
            _ => None,
        })
        .collect();
    eprintln!("recorded link outages (start s, length s): {downs:?}");
    assert_eq!(downs.len(), 2, "record should see the two link drops:\n{text}");
    assert!((downs[0].1 - 5.0).abs() < 1.0 && (downs[1].1 - 30.0).abs() < 1.0, "recorded lengths {downs:?}");
    let replay = format!(
        "{text}\n[[fault]]\nkind = \"silent_link\"\nat_s = {:.3}\nfor_s = 20\n\n[[fault]]\nkind = \"broker_restart\"\nat_s = {:.3}\ndown_s = 3\npersist = true\n",
        faults[2].1 - faults[0].1 + downs[0].0,
        faults[3].1 - faults[0].1 + downs[0].0,
    );
    let scenario = mqtt_sim::scenario::Scenario::parse(&replay).unwrap_or_else(|e| panic!("replay scenario: {e}\n{replay}"));
    let component = mqtt_host::ComponentFile::embedded().unwrap();
    for seed in 1..=3 {
        let o = mqtt_sim::runner::run(&scenario, "recorded-rig", seed, &component);
        let sim_in_order = o.expectations.iter().any(|c| c.name.contains("order") && c.passed);
        eprintln!(
            "simulator seed {seed}: {} published, {} delivered, {} lost, {} duplicates, in order: {sim_in_order}",
            o.qos1_published, o.qos1_delivered, o.qos1_lost, o.duplicates
        );
        assert_eq!((o.qos1_lost == 0, sim_in_order), (lost.is_empty(), in_order), "the simulator's verdict differs from the rig's: {:?}", o.expectations);
        assert!(o.passed, "replay failed: {:?}", o.expectations);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mosquitto_sub -F "%U %t %p"`: unix time, topic, payload.
fn parse_line(l: &str) -> Option<(f64, String, String)> {
    let mut parts = l.splitn(3, ' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.to_string(), parts.next()?.to_string()))
}

const DROPPED: &str = "$SYS/broker/publish/messages/dropped";
