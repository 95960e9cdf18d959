//! `mqtt-board record` from the command line: a recording is never lost to where it is
//! written or to how it is stopped. (The netns rig, `netns_outages.rs`, checks what a
//! recording holds.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOARD: &str = env!("CARGO_BIN_EXE_mqtt-board");

/// An `--out` that cannot be written is refused before anything is recorded, naming it, not
/// after a recording that may have run for hours.
#[test]
fn an_out_that_cannot_be_written_is_refused_before_recording() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("rec.toml");
    for out in [missing.as_path(), dir.path()] {
        let started = Instant::now();
        let run = Command::new(BOARD).args(["record", "--iface", "lo", "--duration", "60s", "--out"]).arg(out).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{}: accepted", out.display());
        assert!(stderr.contains(&format!("--out {}", out.display())), "the error does not name the file: {stderr}");
        assert!(!stderr.contains("recording link state"), "it recorded first: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(30), "refused only after {:?}", started.elapsed());
    }
}

/// SIGTERM (what `timeout`, `kill` and systemd send) ends a recording as Ctrl-C does: the
/// scenario is written. It used to kill the recorder and lose it. An existing file is
/// replaced, as `tcpdump -w` replaces its file.
#[test]
fn sigterm_ends_the_recording_and_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec.toml");
    std::fs::write(&out, "an older file, longer than nothing\n".repeat(200)).unwrap();
    let mut child = Command::new(BOARD).args(["record", "--iface", "lo", "--out"]).arg(&out).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("recording link state of lo"), "{line}");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert!(rest.contains(&format!("wrote {}", out.display())), "{rest}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("# Recorded by `mqtt-board record --iface lo`"), "{text}");
    assert!(!text.contains("an older file"), "the old file's bytes remain: {text}");
    assert!(text.contains("[device]"), "{text}");
}
