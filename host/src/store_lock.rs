//! The lock file beside a store file, which every host makes while it has the store open,
//! so that hosts in different languages keep off each other's store.
//!
//! The Rust and Python hosts lock the store file itself (`flock`): the lock goes with the
//! process, so a crash leaves nothing behind. Node has no `flock`, so its host marks the
//! store with a file beside it instead: `PATH.lock`, made only if it does not exist, holding
//! `PID HOST` (Node before this convention wrote the pid alone). A Node client checks that
//! file only. So this host makes one too (it writes `PID rust`), and checks for one a Node
//! client made: a Node client and a Rust one on the same store at once would each take the
//! other's records for their own, and erase them.
//!
//! What a lock file found here means, with the store's `flock` already held:
//! - written by a host that also `flock`s (`rust`, `python`): left by a process that no
//!   longer has the store (it would hold the `flock`), so it is taken over;
//! - written by Node (or by no host this knows): its process has the store while it runs,
//!   so the store is refused while that process is alive, and the file taken over once it
//!   is gone.
//!
//! A takeover is reported in the store's repairs. Where no lock file can be made (a
//! read-only directory), the store opens without one and the repairs say so.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What this host writes after the pid.
const HOST: &str = "rust";
/// The hosts that also hold the store file's `flock` while they have it.
const FLOCKING_HOSTS: [&str; 2] = ["rust", "python"];
/// Tries at making the file: another opener may take over a stale one at the same moment.
const TRIES: usize = 3;

/// The lock file this process made; removed when dropped (with the store).
#[derive(Debug)]
pub(crate) struct StoreLock {
    path: PathBuf,
    content: String,
}

/// `PATH.lock` for the store at `PATH`.
pub(crate) fn lock_path(store: &Path) -> PathBuf {
    let mut p = store.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Who a lock file names, from its text: the pid and the host, `node` when it names none.
fn holder(text: &str) -> Option<(u32, &str)> {
    let mut words = text.split_whitespace();
    let pid = words.next()?.parse().ok().filter(|p| *p > 0)?;
    Some((pid, words.next().unwrap_or("node")))
}

/// Whether process `pid` is running. Where that cannot be told (no `/proc`), it is taken
/// to be: refusing a store whose lock file is stale costs the user a `rm`, taking over a
/// live one costs them their records.
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl StoreLock {
    /// Makes the lock file for `store`, whose `flock` the caller holds. `Ok(None)` when no
    /// lock file can be made (noted in `notes`); `ResourceBusy` while a live Node client
    /// has the store. Takeovers of stale files are noted in `notes`.
    pub(crate) fn take(store: &Path, notes: &mut Vec<String>) -> std::io::Result<Option<StoreLock>> {
        let path = lock_path(store);
        let content = format!("{} {HOST}\n", std::process::id());
        for _ in 0..TRIES {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    if let Err(e) = file.write_all(content.as_bytes()) {
                        // What was made goes with the failure: left cut short, it would name
                        // no process until the next opener took it over.
                        let _ = std::fs::remove_file(&path);
                        return Err(e);
                    }
                    return Ok(Some(StoreLock { path, content }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = match std::fs::read_to_string(&path) {
                        Ok(text) => text,
                        // Gone again meanwhile (its holder closed the store): the next try
                        // makes it.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    let why = match holder(&text) {
                        Some((pid, host)) if FLOCKING_HOSTS.contains(&host) => format!("process {pid} ({host}) no longer has the store"),
                        Some((pid, host)) if alive(pid) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::ResourceBusy,
                                format!(
                                    "in use by another client (process {pid}, the {host} host, holds {}); one store serves one client (if that process is not a client of this store, remove the file)",
                                    path.display()
                                ),
                            ));
                        }
                        Some((pid, host)) => format!("process {pid} ({host}) is gone"),
                        // Empty too: a process that died between making it and writing it.
                        None => "it names no process".to_string(),
                    };
                    notes.push(format!("{}: took over the lock file: {why}", path.display()));
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    notes.push(format!("{}: no lock file made ({e}): a Node client would not see that this one has the store", path.display()));
                    return Ok(None);
                }
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::ResourceBusy, format!("{}: another client is taking this store at the same moment", path.display())))
    }
}

impl Drop for StoreLock {
    /// Removes the file if it is still this process's.
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.path).is_ok_and(|t| t == self.content) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_names_its_pid_and_host_and_node_when_it_names_none() {
        assert_eq!(holder("123 rust\n"), Some((123, "rust")));
        assert_eq!(holder("123 python\n"), Some((123, "python")));
        assert_eq!(holder("123\n"), Some((123, "node")));
        assert_eq!(holder("0 node"), None);
        assert_eq!(holder("x node"), None);
        assert_eq!(holder(""), None);
    }
}
