//! What the tests that stream lines through `mqtt-board` share: child processes killed on
//! drop, pipes read line by line as they come, a `mosquitto_sub` observer.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

pub mod rig;

/// A child process killed when dropped (a failing test leaves nothing behind).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `c` with stdin and stderr piped (what a test feeds and reads) and stdout dropped.
pub fn spawn_piped(c: &mut Command) -> Child {
    c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("the command runs")
}

/// Lines of a child's pipe, as they come.
pub fn stream(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// A `mosquitto_sub` on `topic` with a persistent session `id` made first (so nothing
/// published after this returns is missed), printing payloads.
pub fn observer(port: u16, topic: &str, id: &str) -> (Killed, mpsc::Receiver<String>) {
    let base = ["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-q", "1", "-c", "-i", id].map(String::from);
    assert!(Command::new("mosquitto_sub").args(&base).arg("-E").status().expect("mosquitto_sub is installed (.ci/test installs it)").success());
    let mut child = Command::new("mosquitto_sub").args(&base).stdout(Stdio::piped()).spawn().unwrap();
    let rx = stream(child.stdout.take().unwrap());
    (Killed(child), rx)
}
