//! `mqtt-board pub`/`sub` with mosquitto_pub/mosquitto_sub's habits, run side by side with
//! them against a real Mosquitto: the same flags give the same messages and the same output.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};

use mosquitto_launcher::Mosquitto;

fn board(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mqtt-board"));
    c.args(args).env_remove("MQTT_BOARD_PASSWORD");
    c
}

fn output(mut c: Command) -> Output {
    c.output().expect("the command runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `mosquitto_sub` that has subscribed (see `mosquitto_launcher::observer`) and prints
/// `count` messages or gives up after `wait_s`.
fn watch(port: u16, topic: &str, count: u32, wait_s: u32, extra: &[&str]) -> Child {
    mosquitto_launcher::observer(port, topic, count, wait_s, extra).unwrap_or_else(|e| panic!("{e}"))
}

fn lines(child: Child) -> Vec<String> {
    text(&child.wait_with_output().unwrap().stdout).lines().map(str::to_string).collect()
}

#[test]
fn pub_takes_mosquitto_pub_s_flags_and_delivers_what_mosquitto_pub_does() {
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    let file = broker.dir().join("payload.txt");
    std::fs::write(&file, "from a file\nsecond line").unwrap();
    let url = format!("mqtt://127.0.0.1:{port}/flags/url");
    // Each case: the arguments after the connection flags, and stdin.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-t", "flags/m", "-m", "hello", "-q", "1"], ""),
        (vec!["-t", "flags/n", "-n", "-q", "1"], ""),
        (vec!["-t", "flags/f", "-f", file.to_str().unwrap(), "-q", "1"], ""),
        (vec!["-t", "flags/s", "-s", "-q", "1"], "all of\nstdin"),
        (vec!["-t", "flags/r", "-m", "kept", "-r", "-q", "1"], ""),
    ];
    for (args, stdin) in &cases {
        let topic = args[1];
        // Not %r: whether a queued copy is flagged retained depends on when the observer's
        // session resumed; a fresh subscriber checks the retained one below.
        let obs = watch(broker.port, topic, 2, 10, &["-N", "-F", "%t|%q|%l|%p~~"]);
        for program in ["mosquitto_pub", "board"] {
            let mut c = if program == "board" { board(&["pub"]) } else { Command::new("mosquitto_pub") };
            c.args(["-h", "127.0.0.1", "-p", &port]).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{program} {args:?}: {}", text(&out.stderr));
        }
        // Payloads may span lines: each message ends in ~~ (and no newline, -N).
        let all = text(&obs.wait_with_output().unwrap().stdout);
        let got: Vec<&str> = all.split("~~").filter(|m| !m.is_empty()).collect();
        assert_eq!(got.len(), 2, "{args:?}: {got:?}");
        assert_eq!(got[0], got[1], "{args:?}: mosquitto_pub and mqtt-board delivered differently");
    }
    // -r: the broker kept the message retained for a later subscriber.
    let later = output({
        let mut c = Command::new("mosquitto_sub");
        c.args(["-h", "127.0.0.1", "-p", &port, "-t", "flags/r", "-C", "1", "-W", "5", "-F", "%r|%p"]);
        c
    });
    assert_eq!(text(&later.stdout).trim(), "1|kept");
    // -L: host, port and topic from the URL.
    let obs = watch(broker.port, "flags/url", 1, 10, &[]);
    let out = output(board(&["pub", "-L", &url, "-m", "via url", "-q", "1"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lines(obs), ["via url"]);
}

#[test]
fn dash_h_is_the_host_help_is_long_only_and_an_unknown_flag_is_exit_2() {
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    let obs = watch(broker.port, "x", 1, 10, &[]);
    // QoS 1: the observer's session queues it if the observer has not reconnected yet (a
    // QoS 0 message to an offline session is dropped, which failed this test under load).
    let out = output(board(&["pub", "-h", "127.0.0.1", "-p", &port, "-t", "x", "-m", "hi", "-q", "1"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lines(obs), ["hi"], "-h named the host: the message went out");
    let help = output(board(&["pub", "--help"]));
    assert!(help.status.success() && text(&help.stdout).contains("Usage"));
    let unknown = output(board(&["pub", "-h", "127.0.0.1", "-t", "x", "-m", "hi", "--bogus"]));
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
    let nothing = output(board(&["pub", "-h", "127.0.0.1", "-p", &port, "-t", "x"]));
    assert!(!nothing.status.success() && text(&nothing.stderr).contains("nothing to publish"));
}

#[test]
fn dash_l_streams_each_line_as_it_arrives() {
    use std::io::BufRead;
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    let mut obs = watch(broker.port, "live", 2, 30, &[]);
    let mut observed = std::io::BufReader::new(obs.stdout.take().unwrap());
    let mut child =
        board(&["pub", "-h", "127.0.0.1", "-p", &port, "-t", "live", "-q", "1", "-l"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "100").unwrap();
    stdin.flush().unwrap();
    // The observer prints the first line while mqtt-board's stdin is still open: it was
    // published as it arrived, not at end of input (mosquitto_sub gives up after 30 s).
    let mut first = String::new();
    observed.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "100", "the first line was not published before stdin closed");
    writeln!(stdin, "101").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut second = String::new();
    observed.read_line(&mut second).unwrap();
    assert_eq!(second.trim(), "101");
    let _ = obs.wait();
}

/// -l reads lines as bytes, as mosquitto_pub does: a payload need not be UTF-8 (a line that
/// was not ended the run: "invalid utf-8", and the lines after it unsent), `\r` stays, and
/// a last line without `\n` is sent.
#[test]
fn dash_l_sends_the_bytes_mosquitto_pub_sends() {
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    let input: &[u8] = b"first\n\xff\xfe binary\ncarriage\r\n\nlast, unended";
    let obs = watch(broker.port, "flags/lines", 10, 20, &["-N", "-F", "%p~~"]);
    for program in ["mosquitto_pub", "board"] {
        let mut c = if program == "board" { board(&["pub"]) } else { Command::new("mosquitto_pub") };
        c.args(["-h", "127.0.0.1", "-p", &port, "-t", "flags/lines", "-q", "1", "-l"]).stdin(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{program}: {}", text(&out.stderr));
    }
    let all = obs.wait_with_output().unwrap().stdout;
    let got: Vec<&[u8]> = all.split(|&b| b == b'~').filter(|m| !m.is_empty()).collect();
    let lines: [&[u8]; 5] = [b"first", b"\xff\xfe binary", b"carriage\r", b"", b"last, unended"];
    // The empty line is a message with an empty payload, which -F prints as nothing between
    // two ~~: splitting on '~' cannot tell it apart, so it is counted, not compared.
    let expected: Vec<&[u8]> = lines.iter().copied().filter(|l| !l.is_empty()).collect();
    assert_eq!(got.len(), 8, "{got:?}");
    assert_eq!(got[..4], expected[..], "mosquitto_pub");
    assert_eq!(got[4..], expected[..], "mqtt-board");
}

#[test]
fn sub_prints_what_mosquitto_sub_prints() {
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    for (k, fmt) in [vec!["-v"], vec!["-F", "%t|%p|%q|%r|%l"], vec![]].into_iter().enumerate() {
        // Each subscriber first makes a persistent session and exits once subscribed (-c -E),
        // so the messages queue for it however late its second run connects.
        let session = |who: &str| format!("{who}-{}-{k}", std::process::id());
        let base = |id: &str| -> Vec<String> { ["-h", "127.0.0.1", "-p", &port, "-t", "s/#", "-q", "1", "-c", "-i", id].map(String::from).to_vec() };
        let (mosq_id, ours_id) = (session("mosq"), session("ours"));
        assert!(Command::new("mosquitto_sub").args(base(&mosq_id)).arg("-E").status().unwrap().success());
        let made = board(&["sub"]).args(base(&ours_id)).arg("-E").output().unwrap();
        assert!(made.status.success(), "sub -c -E: {}", text(&made.stderr));
        for m in ["one", "two"] {
            assert!(Command::new("mosquitto_pub").args(["-h", "127.0.0.1", "-p", &port, "-t", "s/a", "-q", "1", "-m", m]).status().unwrap().success());
        }
        let run = |c: &mut Command| c.args(["-C", "2", "-W", "20"]).args(&fmt).output().unwrap();
        let a = run(Command::new("mosquitto_sub").args(base(&mosq_id)));
        let b = run(board(&["sub"]).args(base(&ours_id)));
        assert!(b.status.success(), "{}", text(&b.stderr));
        assert_eq!(text(&b.stdout), text(&a.stdout), "format {fmt:?}");
        assert!(text(&a.stdout).contains("two"));
    }
    // -W: nothing arrives, so it gives up with mosquitto_sub's status.
    let quiet = output(board(&["sub", "-h", "127.0.0.1", "-p", &port, "-t", "nothing/here", "-W", "1"]));
    assert_eq!(quiet.status.code(), Some(27));
}

/// `sub --json` keeps every payload's bytes: text as `payload`, anything else as
/// `payload_base64` (a binary payload used to come out as text with each bad byte made
/// U+FFFD).
#[test]
fn sub_json_keeps_a_binary_payload_s_bytes() {
    use base64::Engine as _;
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    let id = format!("json-{}", std::process::id());
    let sub = || board(&["sub", "-h", "127.0.0.1", "-p", &port, "-t", "j/#", "-q", "1", "-c", "-i", &id, "--json"]);
    assert!(sub().arg("-E").status().unwrap().success());
    let binary: &[u8] = b"\xff\xfe\x00 not text";
    for (topic, payload) in [("j/text", &b"caf\xc3\xa9 \"quoted\""[..]), ("j/bin", binary)] {
        let mut c = Command::new("mosquitto_pub").args(["-h", "127.0.0.1", "-p", &port, "-t", topic, "-q", "1", "-s"]).stdin(Stdio::piped()).spawn().unwrap();
        c.stdin.take().unwrap().write_all(payload).unwrap();
        assert!(c.wait().unwrap().success());
    }
    let out = output({
        let mut c = sub();
        c.args(["-C", "2", "-W", "20"]);
        c
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    let objects: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert_eq!(objects[0]["topic"], "j/text");
    assert_eq!(objects[0]["payload"], "café \"quoted\"");
    assert_eq!(objects[0]["qos"], 1);
    assert_eq!(objects[1]["topic"], "j/bin");
    assert!(objects[1].get("payload").is_none(), "{}", objects[1]);
    let b64 = objects[1]["payload_base64"].as_str().unwrap();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), binary);
}

/// A reader that goes away (`| head -1`) ends `sub` quietly, as it ends mosquitto_sub (it
/// panicked with a backtrace); a stdout that cannot be written (a full disk) is an error
/// saying so.
#[test]
fn sub_stops_quietly_when_its_reader_goes_and_says_why_when_stdout_fails() {
    use std::io::BufRead as _;
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    let publish =
        |m: &str| assert!(Command::new("mosquitto_pub").args(["-h", "127.0.0.1", "-p", &port, "-t", "p/a", "-q", "1", "-m", m]).status().unwrap().success());
    let id = format!("pipe-{}", std::process::id());
    // -W: a backstop, an exit status (27) the assertions refuse.
    let sub = || board(&["sub", "-h", "127.0.0.1", "-p", &port, "-t", "p/a", "-q", "1", "-c", "-i", &id, "-W", "20"]);
    assert!(sub().arg("-E").status().unwrap().success());
    publish("first");
    let mut child = sub().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    // The reader is gone; the next message's write finds the pipe closed.
    publish("second");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));

    publish("third");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = output({
        let mut c = sub();
        c.stdout(full);
        c
    });
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("writing to stdout: No space left on device"), "{}", text(&out.stderr));
}

#[test]
fn sigterm_disconnects_cleanly_so_the_will_stays_unpublished() {
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    let will = watch(broker.port, "w/status", 1, 6, &[]);
    let data = watch(broker.port, "w/data", 1, 20, &[]);
    let mut child = board(&["pub", "-h", "127.0.0.1", "-p", &port, "-t", "w/data", "-q", "1", "--interval", "200ms"])
        .args(["--will-topic", "w/status", "--will-payload", "gone", "--will-qos", "1", "--will-retain"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(lines(data).len(), 1, "publishing");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    assert_eq!(lines(will), Vec::<String>::new(), "a clean stop sends DISCONNECT: no will");
}

/// A stop (SIGTERM) while a publish waits for its acknowledgement, the broker gone, is said,
/// and the exit status is not 0: it was 0, as if everything had been delivered. Both ways
/// `pub` publishes: one message after another (`--interval`), and lines as they come (`-l`).
#[test]
fn a_stop_before_the_broker_acknowledged_says_so_and_is_not_success() {
    for lines_mode in [false, true] {
        let broker = Mosquitto::start("").unwrap();
        let port = broker.port.to_string();
        let data = watch(broker.port, "stop/data", 1, 20, &[]);
        let mode: &[&str] = if lines_mode { &["-l"] } else { &["--interval", "200ms"] };
        let mut child = board(&["pub", "-h", "127.0.0.1", "-p", &port, "-t", "stop/data", "-q", "1"])
            .args(mode)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if lines_mode {
            writeln!(stdin, "first").unwrap();
        }
        assert_eq!(lines(data).len(), 1, "publishing");
        drop(broker);
        if lines_mode {
            writeln!(stdin, "second").unwrap();
        }
        // The next publish (within 200 ms) waits for a broker that is gone.
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        // Bounded: with stdin still open, `pub -l` used to hang at exit (see main).
        let stopped = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            child.try_wait().unwrap().is_some()
        });
        if !stopped {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert!(stopped, "{mode:?}: still running 20 s after SIGTERM; {err}");
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {err}");
        // One waits; with `-l` the first may too, if its PUBACK was still on the way when the
        // broker went.
        assert!(err.contains("accepted message(s) not yet acknowledged: without --store they are lost"), "{mode:?}: {err}");
    }
}

#[test]
fn a_password_from_the_environment_or_a_file_not_only_argv() {
    let port = mosquitto_launcher::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwords");
    assert!(Command::new("mosquitto_passwd").args(["-b", "-c", pw.to_str().unwrap(), "ann", "s3cret"]).status().unwrap().success());
    let conf = format!("listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n", pw.display());
    let _broker = Mosquitto::start_with_config(port, &conf, dir).unwrap();
    let port = port.to_string();
    let base = ["pub", "-h", "127.0.0.1", "-p", port.as_str(), "-t", "auth/t", "-m", "x", "-q", "1", "-u", "ann", "--response-time-ms", "2000"];
    let from_env = output({
        let mut c = board(&base);
        c.env("MQTT_BOARD_PASSWORD", "s3cret");
        c
    });
    assert!(from_env.status.success(), "{}", text(&from_env.stderr));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "s3cret\n").unwrap();
    let from_file = output(board(&[&base[..], &["--pw-file", file.path().to_str().unwrap()]].concat()));
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    // The file wins over an exported variable (which used to make `--pw-file` a conflict
    // with a `--pw` nobody typed), and so does -P.
    for flags in [["--pw-file", file.path().to_str().unwrap()], ["-P", "s3cret"]] {
        let over_env = output({
            let mut c = board(&[&base[..], &flags[..]].concat());
            c.env("MQTT_BOARD_PASSWORD", "wrong");
            c
        });
        assert!(over_env.status.success(), "{flags:?}: {}", text(&over_env.stderr));
    }
    let wrong = output({
        let mut c = board(&base);
        c.env("MQTT_BOARD_PASSWORD", "wrong");
        c
    });
    assert!(!wrong.status.success(), "a wrong password is refused");
}

#[test]
fn dash_d_logs_every_packet_as_mosquitto_does() {
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    let out = output(board(&["pub", "-h", "127.0.0.1", "-p", &port, "-t", "d/t", "-m", "hello", "-q", "2", "-V", "5", "-i", "dbg", "-d"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    let packets: Vec<&str> = log.lines().filter_map(|l| l.split_once("Client dbg ").map(|(_, rest)| rest)).collect();
    let expected = [
        "sending CONNECT",
        "received CONNACK (0)",
        "sending PUBLISH (d0, q2, r0, m1, 'd/t', ... (5 bytes))",
        "received PUBREC (m1, rc0)",
        "sending PUBREL (m1, rc0)",
        "received PUBCOMP (m1, rc0)",
        "sending DISCONNECT (rc0)",
    ];
    assert_eq!(packets.len(), expected.len(), "{log}");
    for (got, want) in packets.iter().zip(expected) {
        assert!(got.starts_with(want), "{got:?} is not {want:?}:\n{log}");
    }
}

#[test]
fn dash_u_takes_a_filter_out_of_a_persistent_session() {
    let broker = Mosquitto::start("").unwrap();
    let port = broker.port.to_string();
    let id = format!("unsub-{}", std::process::id());
    let base = ["sub", "-h", "127.0.0.1", "-p", port.as_str(), "-q", "1", "-c", "-i", id.as_str(), "-x", "3600", "-V", "5"];
    let subscribed = output(board(&[&base[..], &["-t", "u/#", "-E"]].concat()));
    assert!(subscribed.status.success(), "{}", text(&subscribed.stderr));
    let unsubscribed = output(board(&[&base[..], &["-U", "u/#", "-E"]].concat()));
    assert!(unsubscribed.status.success(), "{}", text(&unsubscribed.stderr));
    assert!(Command::new("mosquitto_pub").args(["-h", "127.0.0.1", "-p", &port, "-t", "u/a", "-q", "1", "-m", "after"]).status().unwrap().success());
    // The session (kept by -x across connections) no longer holds u/#: nothing queued for it.
    let resumed = output(board(&[&base[..], &["-t", "other/topic", "-C", "1", "-W", "2"]].concat()));
    assert_eq!(resumed.status.code(), Some(27), "got {:?}", text(&resumed.stdout));
    // Without -U the same steps deliver the message: the check above can fail.
    let kept = format!("kept-{}", std::process::id());
    let base2 = ["sub", "-h", "127.0.0.1", "-p", port.as_str(), "-q", "1", "-c", "-i", kept.as_str(), "-x", "3600", "-V", "5"];
    assert!(output(board(&[&base2[..], &["-t", "u/#", "-E"]].concat())).status.success());
    assert!(Command::new("mosquitto_pub").args(["-h", "127.0.0.1", "-p", &port, "-t", "u/a", "-q", "1", "-m", "after"]).status().unwrap().success());
    let delivered = output(board(&[&base2[..], &["-t", "other/topic", "-C", "1", "-W", "5"]].concat()));
    assert_eq!(text(&delivered.stdout).trim(), "after");
}

/// A mistyped `--iface` is said at start, naming the interfaces there are: its link reads
/// as down until it appears (a device may come up after the board starts), so otherwise
/// the board would wait for it without a word.
#[test]
fn a_missing_interface_is_said_at_start() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("recorded.toml");
    let recorded = output(board(&["record", "--iface", "nosuch0", "--duration", "100ms", "--out", out.to_str().unwrap()]));
    let err = text(&recorded.stderr);
    assert!(err.contains("warning: --iface nosuch0: no network interface nosuch0 (there are: "), "{err}");
    assert!(err.contains(" lo"), "names the interfaces there are: {err}");
    let mut publisher = board(&["pub", "--iface", "nosuch0", "-p", "1", "-t", "t", "-m", "x"]).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    std::io::BufReader::new(publisher.stderr.take().unwrap()).read_line(&mut first).unwrap();
    publisher.kill().unwrap();
    publisher.wait().unwrap();
    assert!(first.starts_with("warning: --iface nosuch0: no network interface nosuch0"), "{first}");
}

/// What mosquitto_sub refuses at start (a count or a timeout of 0, an unknown `-F`
/// specifier), the board refuses too, before it connects (no broker runs here): it used to
/// wait for ever, give up at once, or print `%z` in every message.
#[test]
fn values_mosquitto_sub_refuses_are_refused_at_start() {
    for (args, says) in [
        (&["-C", "0"][..], "invalid value '0' for '--count <COUNT>'"),
        (&["-W", "0"], "invalid value '0' for '-W <SECS>'"),
        (&["-F", "%z"], "no format specifier %z"),
        (&["-F", "50%"], "ends in a lone %"),
    ] {
        let theirs = output({
            let mut c = Command::new("mosquitto_sub");
            c.args(["-p", "1", "-t", "t"]).args(args);
            c
        });
        assert!(!theirs.status.success(), "mosquitto_sub took {args:?}");
        let ours = output(board(&[&["sub", "-p", "1", "-t", "t"][..], args].concat()));
        let err = text(&ours.stderr);
        assert!(!ours.status.success() && err.contains(says), "{args:?}: {err}");
    }
    let ours = output(board(&["pub", "-p", "1", "-t", "t", "--count", "0", "--interval", "1s"]));
    assert!(text(&ours.stderr).contains("invalid value '0' for '--count <COUNT>'"), "{}", text(&ours.stderr));
}
