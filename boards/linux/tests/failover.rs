//! `mqtt-board pub --failover`: two real Mosquittos, the first killed mid-stream; the board
//! goes on with the second and nothing it accepted is lost.

use std::io::Write;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mosquitto_launcher::Mosquitto;
use support::{observer, spawn_piped, stream};

mod support;

const LINES: usize = 1_000;
const TOPIC: &str = "failover/lines";

#[test]
fn the_board_fails_over_to_the_second_broker_and_loses_nothing() {
    let first = Mosquitto::start("").unwrap();
    let second = Mosquitto::start("").unwrap();
    let (_obs1, got1) = observer(first.port, TOPIC, "failover-observer");
    let (_obs2, got2) = observer(second.port, TOPIC, "failover-observer");
    let mut child = spawn_piped(
        Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
            .args([
                "pub",
                "-h",
                "127.0.0.1",
                "-p",
                &first.port.to_string(),
                "-t",
                TOPIC,
                "-q",
                "1",
                "-l",
                "-i",
                "failover-board",
                "-d",
                "--response-time-ms",
                "1000",
            ])
            .args(["--failover", &format!("127.0.0.1:{}", second.port)]),
    );
    let events = stream(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..LINES {
            writeln!(stdin, "line-{i:05}").unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    // Kill the first broker once a third of the lines were accepted.
    let mut first = Some(first);
    let mut accepted = 0;
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match events.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => {
                accepted += usize::from(l.contains(" accepted \""));
                log.push(l);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if accepted > LINES / 3 {
            drop(first.take());
        }
        assert!(Instant::now() < deadline, "the board did not finish:\n{}", log.join("\n"));
    }
    feeder.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "every line acknowledged: {status}\n{}", log.join("\n"));
    assert!(first.is_none());
    // Together the two observers have every line; the second has the later ones.
    let mut seen = vec![0u32; LINES];
    let mut on_second = 0;
    let until = Instant::now() + Duration::from_secs(20);
    while seen.contains(&0) && Instant::now() < until {
        for (rx, second) in [(&got1, false), (&got2, true)] {
            while let Ok(p) = rx.try_recv() {
                let i: usize = p.strip_prefix("line-").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected payload {p:?}"));
                seen[i] += 1;
                on_second += usize::from(second);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let missing: Vec<usize> = (0..LINES).filter(|i| seen[*i] == 0).collect();
    assert!(missing.is_empty(), "{} lines lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(10)]);
    assert!(on_second >= LINES / 2, "only {on_second} lines went to the second broker");
    eprintln!("{LINES} lines, {on_second} through the second broker, {} duplicates", seen.iter().map(|n| n - 1).sum::<u32>());
}
