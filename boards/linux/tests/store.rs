//! `mqtt-board pub --store FILE` against a real Mosquitto: killed with SIGKILL at moments
//! drawn from a seed and restarted on the rest of its input, it loses no line it accepted.

use std::io::Write;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mosquitto_launcher::Mosquitto;
use support::{observer, spawn_piped, stream};

mod support;
use mqtt_protocol::SplitMix64;

const LINES: usize = 2_000;
const TOPIC: &str = "store/lines";

fn line(i: usize) -> String {
    format!("line-{i:05}")
}

/// `mqtt-board pub -l --store`, with stdin, stdout and stderr piped.
fn board(port: u16, store: &std::path::Path) -> Child {
    spawn_piped(
        Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
            .args(["pub", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", TOPIC, "-q", "1", "-l", "-c", "-i", "store-test", "-d"])
            .arg("--store")
            .arg(store)
            .env_remove("MQTT_BOARD_PASSWORD"),
    )
}

/// The index of the line an `accepted "line-NNNNN"` debug line names.
fn accepted(l: &str) -> Option<usize> {
    let rest = l.split(" accepted \"line-").nth(1)?;
    rest.get(..5)?.parse().ok()
}

/// What the observers received: copies per line, and first copies in arrival order.
struct Seen {
    copies: Vec<u32>,
    order: Vec<usize>,
}

impl Seen {
    /// Takes what `rx` delivers for `wait`, or until every line has a copy.
    fn drain(&mut self, rx: &mpsc::Receiver<String>, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.copies.contains(&0) && Instant::now() < deadline {
            if let Ok(p) = rx.recv_timeout(Duration::from_millis(100)) {
                let i: usize = p.strip_prefix("line-").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected payload {p:?}"));
                if self.copies[i] == 0 {
                    self.order.push(i);
                }
                self.copies[i] += 1;
            }
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_accepted_line() {
    const KILLS: u32 = 6;
    /// The kill that comes while the broker is down: the lines accepted then were never
    /// sent, so only the store can deliver them.
    const KILL_IN_OUTAGE: u32 = 3;
    let mut broker = Mosquitto::start("").unwrap();
    let port = broker.port;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("board.store");
    let (mut obs, mut got) = observer(port, TOPIC, "store-observer");
    let _ = &obs;
    let mut seen = Seen { copies: vec![0; LINES], order: Vec::new() };
    let mut rng = SplitMix64::new(16);
    let mut next = 0; // the first line not yet accepted
    let mut kills = 0;
    let mut accepted_in_outage = 0;
    while next < LINES {
        let mut child = board(port, &store);
        let events = stream(child.stderr.take().unwrap());
        // Feed the rest of the input; the board reads it as its window allows.
        let mut stdin = child.stdin.take().unwrap();
        let rest: Vec<String> = (next..LINES).map(line).collect();
        let feeder = std::thread::spawn(move || {
            // Paced like a sensor (a line every 3 ms), so that the kills fall mid-stream.
            for l in rest {
                if writeln!(stdin, "{l}").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        let last_run = kills == KILLS;
        let outage = kills == KILL_IN_OUTAGE;
        let started = next;
        // Start-up (compiling the component) takes a few hundred milliseconds.
        let mut kill_at = Instant::now() + Duration::from_millis(400 + rng.below(800));
        let mut broker_down_at = None;
        let mut log = Vec::new();
        loop {
            match events.recv_timeout(Duration::from_millis(20)) {
                Ok(l) => {
                    if let Some(i) = accepted(&l) {
                        assert_eq!(i, next, "lines are accepted in input order");
                        next = i + 1;
                        if broker_down_at.is_some() {
                            accepted_in_outage += 1;
                        }
                    }
                    log.push(l);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if outage && broker_down_at.is_none() && next > started + 50 {
                // Connected and streaming: the broker dies; the board goes on accepting
                // lines until its window is full, and is killed a moment later.
                broker_down_at = Some(Instant::now());
                kill_at = Instant::now() + Duration::from_millis(500);
                drop(std::mem::replace(&mut broker, Mosquitto::start_on(mosquitto_launcher::free_port().unwrap(), "").unwrap()));
            }
            if !last_run && Instant::now() >= kill_at && (!outage || broker_down_at.is_some()) {
                child.kill().unwrap(); // SIGKILL: no DISCONNECT, no chance to sync anything more
                kills += 1;
                break;
            }
        }
        let status = child.wait().unwrap();
        feeder.join().unwrap();
        if last_run {
            assert!(status.success(), "the last run ends once every line is acknowledged: {status}\n{}", log.join("\n"));
            assert_eq!(next, LINES, "{}", log.join("\n"));
        }
        if broker_down_at.is_some() {
            // The broker comes back (without its sessions): the observer subscribes again
            // before the board restarts, so nothing it publishes is missed.
            seen.drain(&got, Duration::from_millis(500));
            drop(obs);
            drop(std::mem::replace(&mut broker, Mosquitto::start_on(port, "").unwrap()));
            (obs, got) = observer(port, TOPIC, "store-observer");
        }
    }
    assert_eq!(kills, KILLS);
    assert!(accepted_in_outage > 0, "the board accepted lines while the broker was down");
    // Every line reaches the observer; first copies in order; duplicates bounded by what
    // was in flight at each kill (the window) and what a kill left unconfirmed.
    seen.drain(&got, Duration::from_secs(30));
    drop(obs);
    let missing: Vec<usize> = (0..LINES).filter(|i| seen.copies[*i] == 0).collect();
    assert!(missing.is_empty(), "{} lines never arrived, e.g. {:?}", missing.len(), &missing[..missing.len().min(10)]);
    assert!(seen.order.windows(2).all(|w| w[0] < w[1]), "first copies out of order");
    let duplicates: u32 = seen.copies.iter().map(|n| n - 1).sum();
    assert!(duplicates <= KILLS * 2 * 20, "{duplicates} duplicates");
    eprintln!("{LINES} lines, {kills} SIGKILLs ({accepted_in_outage} lines accepted with the broker down), {duplicates} duplicates");
}

#[test]
fn a_damaged_store_file_is_reported_and_the_board_goes_on() {
    let broker = Mosquitto::start("").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("board.store");
    let publish = |payload: &str| {
        Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
            .args(["pub", "-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", TOPIC, "-q", "1", "-m", payload, "-i", "damaged"])
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap()
    };
    assert!(publish("first").status.success());
    // Scribbled: the image's first sector overwritten with noise.
    let mut bytes = std::fs::read(&store).unwrap();
    let mut rng = SplitMix64::new(3);
    for b in &mut bytes[64..64 + 4096] {
        *b = rng.below(256) as u8;
    }
    std::fs::write(&store, &bytes).unwrap();
    let out = publish("second");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("storage sector 0"), "the damage is reported: {err}");
    // Cut short: extended with erased bytes, and said so.
    std::fs::OpenOptions::new().write(true).open(&store).unwrap().set_len(64 + 100).unwrap();
    let out = publish("third");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("of 65536 bytes; the rest reads as erased"), "the truncation is reported: {err}");
    // A header whose magic lost a bit, or whose geometry no store can have (a capacity of
    // 0 read as "no storage" and the board ran without its store, saying nothing): rewritten
    // and said so, and the board goes on with its store.
    for (at, value) in [(3, b'F' ^ 0x10), (8, 0)] {
        let mut bytes = std::fs::read(&store).unwrap();
        if at == 8 {
            bytes[8..12].copy_from_slice(&[0; 4]);
        } else {
            bytes[at] = value;
        }
        std::fs::write(&store, &bytes).unwrap();
        let out = publish("fourth");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("the header is damaged; rewritten for 65536 bytes"), "{err}");
        assert!(!err.contains("running without"), "{err}");
        assert_eq!(std::fs::read(&store).unwrap()[..8], *b"MQFLASH1");
    }
    // And a file that is not a store at all (a mistyped path, say) is refused and left as
    // it is: overwriting it would cost someone their file.
    std::fs::write(&store, b"not a store, but somebody's notes").unwrap();
    let out = publish("fifth");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("not a store file (it does not begin with MQFLASH1); left as it is"), "{err}");
    assert_eq!(std::fs::read(&store).unwrap(), b"not a store, but somebody's notes");
}

/// A second run on a store a first one still uses (a job started again while the last
/// still runs) is refused at start, and the first goes on: two clients on one store would
/// each take the other's records for their own and erase them.
#[test]
fn a_store_in_use_by_another_run_is_refused() {
    let broker = Mosquitto::start("").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("board.store");
    let mut first = board(broker.port, &store);
    let events = stream(first.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !events.recv_timeout(Duration::from_secs(10)).expect("the first run reports").contains("up (session present") {
        assert!(Instant::now() < deadline, "the first run never came up");
    }
    let second = Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
        .args(["pub", "-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", TOPIC, "-q", "1", "-m", "second", "-i", "store-second"])
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(err.contains("in use by another client (it is locked)"), "{err}");
    // The first still takes lines, and ends well once its input does.
    let mut stdin = first.stdin.take().unwrap();
    writeln!(stdin, "{}", line(0)).unwrap();
    drop(stdin);
    let status = first.wait().unwrap();
    assert!(status.success(), "the first run failed: {status}");
}

/// A stop (SIGTERM, as systemd stops a service) while accepted lines wait for a broker that
/// is down keeps them in the store, and the next run sends them. It used to disconnect,
/// which closed their records, and exit 0: the lines were gone.
#[test]
fn sigterm_keeps_the_lines_the_broker_has_not_acknowledged() {
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("board.store");
    let (obs, got) = observer(port, TOPIC, "sigterm-observer");
    let mut child = board(port, &store);
    let events = stream(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut log = Vec::new();
    let wait_accepted = |i: usize, log: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(l) = events.recv_timeout(Duration::from_millis(50)) {
                let hit = accepted(&l) == Some(i);
                log.push(l);
                if hit {
                    return;
                }
            }
        }
        panic!("line {i} not accepted:\n{}", log.join("\n"));
    };
    writeln!(stdin, "{}", line(0)).unwrap();
    wait_accepted(0, &mut log);
    assert_eq!(got.recv_timeout(Duration::from_secs(10)).unwrap(), line(0));
    drop(obs);
    drop(broker);
    writeln!(stdin, "{}", line(1)).unwrap();
    wait_accepted(1, &mut log);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    drop(stdin);
    let rest: Vec<String> = events.iter().collect();
    let err = rest.join("\n");
    assert_eq!(status.code(), Some(1), "{err}");
    // The second line waits (and the first too, if its PUBACK was still on the way).
    assert!(err.contains("accepted message(s) not yet acknowledged: kept in --store"), "{err}");

    // The broker is back (without its sessions); the next run, with nothing new to send,
    // sends the kept line and ends once it is acknowledged.
    let _broker = Mosquitto::start_on(port, "").unwrap();
    let (_obs, got) = observer(port, TOPIC, "sigterm-observer");
    let mut next = board(port, &store);
    drop(next.stdin.take());
    let events = stream(next.stderr.take().unwrap());
    let status = next.wait().unwrap();
    assert!(status.success(), "{status}: {}", events.iter().collect::<Vec<_>>().join("\n"));
    // A copy of the first line may come before it (its PUBACK lost with the broker).
    let mut delivered = Vec::new();
    while !delivered.contains(&line(1)) {
        delivered.push(got.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("line 1 never came: {delivered:?}")));
    }
    assert!(delivered.iter().all(|l| *l == line(0) || *l == line(1)), "{delivered:?}");
}

/// What an earlier life left in the store goes out first, and a run whose own message is
/// done at once (QoS 0) waits for it to be acknowledged too before it disconnects. It used
/// to disconnect as soon as its own message was written, with those still unacknowledged,
/// so the next run sent them again: a second copy of each for every subscriber (found
/// running the Python and Node hosts' store files through `mqtt-board`).
#[test]
fn a_run_waits_for_what_the_store_gave_back_before_it_disconnects() {
    const LEFT: usize = 100;
    let broker = Mosquitto::start("").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("board.store");
    {
        // An earlier life: a hundred QoS 1 publishes accepted (durable) and never sent: more
        // than the in-flight window, so that some are still in flight when this run's own
        // message goes.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _inside = rt.enter();
        let mut cfg = mqtt_host::default_config("127.0.0.1", "store-left");
        cfg.port = Some(broker.port);
        let (flash, _) = mqtt_host::FileFlash::open(&store, mqtt_host::file_flash::DEFAULT_GEOMETRY).unwrap();
        let platform = mqtt_board::TokioPlatform::for_config(&cfg).with_store(flash);
        let component = mqtt_host::ComponentFile::embedded().unwrap();
        let mut earlier = mqtt_host::Device::new(&component, Box::new(platform), cfg, "earlier").unwrap();
        for i in 0..LEFT {
            let p = mqtt_host::Publish {
                topic: TOPIC.into(),
                payload: format!("left-{i}").into_bytes(),
                qos: mqtt_host::Qos::AtLeastOnce,
                retain: false,
                properties: None,
                deadline_ms: None,
            };
            earlier.publish(p).unwrap();
        }
    }
    let (obs, got) = observer(broker.port, TOPIC, "left-observer");
    let run = |message: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
            .args(["pub", "-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", TOPIC, "-q", "0", "-m", message, "-i", "store-left"])
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run("first");
    run("second");
    let mut seen = Vec::new();
    while let Ok(p) = got.recv_timeout(Duration::from_millis(1000)) {
        seen.push(p);
    }
    drop(obs);
    let left = (0..LEFT).map(|i| format!("left-{i}"));
    for want in left.chain(["first".into(), "second".into()]) {
        assert_eq!(seen.iter().filter(|p| **p == want).count(), 1, "{want} arrives once: {seen:?}");
    }
}
