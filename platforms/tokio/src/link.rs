//! The link state the `wifi` import reports: a network interface's, read from sysfs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use mqtt_host::LinkState;

/// Link state of a network interface (Linux sysfs); without an interface (wired, loopback,
/// another OS) the link is reported up.
#[derive(Debug, Clone)]
pub struct LinkMonitor {
    iface: Option<String>,
    sys: PathBuf,
    /// What a running [`LinkWatch`] read last, shared by the clones ([`NOT_WATCHED`] while
    /// none runs). The component asks for the link on every poll, and two sysfs reads (six
    /// syscalls) per poll doubled a board's CPU per message (`pub -l --iface lo`, 20,000
    /// QoS 1 lines: 0.39 → 0.80 s); the watch reads them every `LINK_WATCH` anyway.
    seen: Arc<AtomicU8>,
}

const NOT_WATCHED: u8 = 0;

fn encode(state: LinkState) -> u8 {
    match state {
        LinkState::Down => 1,
        LinkState::Connecting => 2,
        LinkState::Up => 3,
    }
}

fn decode(seen: u8) -> Option<LinkState> {
    match seen {
        1 => Some(LinkState::Down),
        2 => Some(LinkState::Connecting),
        3 => Some(LinkState::Up),
        _ => None,
    }
}

impl LinkMonitor {
    pub fn new(iface: Option<String>) -> Self {
        LinkMonitor { iface, sys: PathBuf::from("/sys/class/net"), seen: Arc::new(AtomicU8::new(NOT_WATCHED)) }
    }

    /// Whether an interface is watched (otherwise the link is always up).
    pub fn watches(&self) -> bool {
        self.iface.is_some()
    }

    /// The link state: while a `LinkWatch` runs, what it read last (at most `LINK_WATCH`
    /// old; a change also wakes the client), otherwise read now.
    pub fn state(&self) -> LinkState {
        decode(self.seen.load(Ordering::Relaxed)).unwrap_or_else(|| self.read())
    }

    /// The link state, read from sysfs now.
    pub fn read(&self) -> LinkState {
        let Some(iface) = &self.iface else { return LinkState::Up };
        let read = |f: &str| std::fs::read_to_string(self.sys.join(iface).join(f)).map(|s| s.trim().to_string());
        match (read("operstate").as_deref(), read("carrier").as_deref()) {
            // Loopback and some virtual interfaces report "unknown" while working.
            (Ok("up" | "unknown"), Ok("1")) => LinkState::Up,
            (Ok("dormant"), _) => LinkState::Connecting,
            _ => LinkState::Down,
        }
    }

    /// Why the watched interface cannot be read now: it does not exist (a typo, or a
    /// device not plugged in or brought up yet), naming those that do. The link reads as
    /// down until it appears, so a host says this at start rather than wait in silence.
    /// `None` when it exists or none is watched.
    pub fn missing(&self) -> Option<String> {
        let iface = self.iface.as_ref()?;
        if self.sys.join(iface).exists() {
            return None;
        }
        // Sorted: the message is the same whatever order the directory lists them in.
        let mut known: Vec<String> =
            std::fs::read_dir(&self.sys).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        known.sort();
        Some(format!("no network interface {iface} (there are: {}); its link counts as down until it appears", known.join(", ")))
    }

    /// Signal level in dBm from `/proc/net/wireless`, for wireless interfaces.
    pub fn rssi(&self) -> Option<i32> {
        let iface = self.iface.as_ref()?;
        let text = std::fs::read_to_string("/proc/net/wireless").ok()?;
        let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{iface}:")))?;
        let level = line.split_whitespace().nth(3)?;
        level.trim_end_matches('.').parse::<f64>().ok().map(|v| v as i32)
    }
}

/// How often a watched interface is read for a change: two sysfs reads (memory, not disk,
/// so reading them on the runtime is fine); the client is woken only when the state changed.
const LINK_WATCH: std::time::Duration = std::time::Duration::from_millis(100);

/// A task that reads the interface's state every `LINK_WATCH`, for [`LinkMonitor::state`]
/// to answer from, and wakes the client when it changed, so a link that returns is seen
/// within `LINK_WATCH`, not at the driver's next periodic poll (up to a second later).
/// Stopped when dropped.
pub(crate) struct LinkWatch(tokio::task::JoinHandle<()>, Arc<AtomicU8>);

impl LinkWatch {
    /// `None` outside a tokio runtime (the driver's periodic poll still sees changes).
    pub(crate) fn spawn(monitor: LinkMonitor, wake: Arc<tokio::sync::Notify>) -> Option<LinkWatch> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut last = monitor.read();
        monitor.seen.store(encode(last), Ordering::Relaxed);
        let seen = monitor.seen.clone();
        Some(LinkWatch(
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(LINK_WATCH);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let now = monitor.read();
                    monitor.seen.store(encode(now), Ordering::Relaxed);
                    if now != last {
                        last = now;
                        wake.notify_one();
                    }
                }
            }),
            seen,
        ))
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.0.abort();
        // Nothing keeps the answer fresh any more: read the interface again.
        self.1.store(NOT_WATCHED, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dir: &std::path::Path, operstate: &str, carrier: &str) {
        std::fs::write(dir.join("wlan9/operstate"), operstate).unwrap();
        std::fs::write(dir.join("wlan9/carrier"), carrier).unwrap();
    }

    /// A monitor of interface `wlan9` in a fake sysfs, which starts as `operstate` and
    /// `carrier` say (keep the directory: it goes when dropped).
    fn fake_wlan9(operstate: &str, carrier: &str) -> (tempfile::TempDir, LinkMonitor) {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir(sys.path().join("wlan9")).unwrap();
        set(sys.path(), operstate, carrier);
        let monitor = LinkMonitor { iface: Some("wlan9".into()), sys: sys.path().to_path_buf(), seen: Default::default() };
        (sys, monitor)
    }

    #[tokio::test]
    async fn a_link_that_comes_back_wakes_the_client_within_the_watch_period() {
        let (sys, monitor) = fake_wlan9("down", "0");
        assert_eq!(monitor.state(), LinkState::Down);
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let _watch = LinkWatch::spawn(monitor.clone(), wake.clone()).expect("inside a runtime");
        // Nothing changed: no wakeup.
        assert!(tokio::time::timeout(LINK_WATCH * 3, wake.notified()).await.is_err());
        set(sys.path(), "up", "1");
        tokio::time::timeout(LINK_WATCH * 3, wake.notified()).await.expect("woken by the change");
        assert_eq!(monitor.state(), LinkState::Up);
    }

    /// The runtime is single-threaded and the test never yields, so the watch's task does
    /// not run: what `state` says comes from the read `spawn` made, or from sysfs.
    #[tokio::test]
    async fn while_watched_the_state_is_the_watchs_last_read_and_afterwards_sysfs_again() {
        let (sys, monitor) = fake_wlan9("up", "1");
        let watch = LinkWatch::spawn(monitor.clone(), Default::default()).expect("inside a runtime");
        set(sys.path(), "down", "0");
        assert_eq!(monitor.state(), LinkState::Up, "no read until the watch's next one");
        drop(watch);
        assert_eq!(monitor.state(), LinkState::Down, "read from sysfs once nothing watches");
    }

    #[test]
    fn a_missing_interface_is_named_with_those_there_are() {
        let (_sys, monitor) = fake_wlan9("up", "1");
        assert_eq!(monitor.missing(), None);
        let typo = LinkMonitor { iface: Some("wlan0".into()), ..monitor };
        assert_eq!(typo.missing().as_deref(), Some("no network interface wlan0 (there are: wlan9); its link counts as down until it appears"));
        assert_eq!(typo.state(), LinkState::Down);
        assert_eq!(LinkMonitor::new(None).missing(), None);
    }

    #[test]
    fn outside_a_runtime_there_is_no_watch() {
        assert!(LinkWatch::spawn(LinkMonitor::new(Some("wlan9".into())), Default::default()).is_none());
    }
}
