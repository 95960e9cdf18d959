//! Where the launcher puts Mosquitto: the benchmark's figures depend on it (see `Session`).

use mosquitto_launcher::{Mosquitto, Session};

/// The session id of process `pid` (`pid` 0: this process). The id itself is 0 when the
/// session's leader lives outside this PID namespace: a test run inside a container (as CI's)
/// sees its own session so.
fn session_of(pid: u32) -> i32 {
    // SAFETY: getsid only reads the kernel's process table.
    let sid = unsafe { libc::getsid(pid as libc::pid_t) };
    assert!(sid >= 0, "getsid({pid}): {}", std::io::Error::last_os_error());
    sid
}

fn alive(pid: u32) -> bool {
    // A killed and reaped process has no /proc entry.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_broker_in_its_own_session_leads_it_and_is_gone_after_drop() {
    let broker = Mosquitto::start_in(Session::Own, "").expect("mosquitto starts");
    let pid = broker.pid();
    assert_eq!(session_of(pid), pid as i32, "setsid makes the broker its session's leader");
    assert_ne!(session_of(pid), session_of(0));
    std::net::TcpStream::connect(("127.0.0.1", broker.port)).expect("it listens");
    drop(broker);
    assert!(!alive(pid), "the broker is killed and reaped on drop");
}

#[test]
fn a_broker_started_plainly_shares_the_starting_session() {
    let broker = Mosquitto::start("").expect("mosquitto starts");
    assert_eq!(session_of(broker.pid()), session_of(0));
}

#[test]
fn a_restarted_broker_keeps_its_session_placement() {
    let broker = Mosquitto::start_in(Session::Own, "").expect("mosquitto starts");
    let broker = broker.restart().expect("mosquitto restarts");
    assert_eq!(session_of(broker.pid()), broker.pid() as i32);
}

#[test]
fn a_broker_in_its_own_session_dies_with_the_thread_that_started_it() {
    // Ctrl-C does not reach another session: PR_SET_PDEATHSIG is what stops the broker of an
    // interrupted benchmark. Here the starting thread ends without dropping the handle.
    let pid = std::thread::spawn(|| {
        let broker = Mosquitto::start_in(Session::Own, "").expect("mosquitto starts");
        let pid = broker.pid();
        std::mem::forget(broker);
        pid
    })
    .join()
    .unwrap();
    // Killed, it is a zombie until reaped: nothing has waited for it (the handle was leaked).
    // Waited for 5 s at most, so that a broker the signal missed fails the test, not hangs it.
    let mut status = 0;
    for _ in 0..100 {
        // SAFETY: waits (without blocking) for our own child, the broker, by pid.
        let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if reaped == pid as i32 {
            assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "killed by its parent-death signal, status {status:#x}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kills our own child, which the test failed to see die.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    panic!("the broker outlived the thread that started it by 5 s");
}
