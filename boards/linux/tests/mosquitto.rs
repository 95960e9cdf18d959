//! The real component on real sockets against a real Mosquitto on loopback (started by the
//! test with a generated config, stopped by pid). `.ci/run` installs Mosquitto.

use std::process::{Child, Command, Stdio};

use mosquitto_launcher::Mosquitto;
use std::time::Duration;

use mqtt_board::TokioPlatform;
use mqtt_host::{default_config, Client, ClientEvent, ComponentFile, Config, Device, Qos, SubscribeProperties, Subscription};

/// The board tests' broker: Mosquitto's default `max_queued_messages` (1000) silently drops
/// QoS 1 messages for a slow subscriber; raised so that a loss would be the client's.
const SETTINGS: &str = "persistence false\nmax_queued_messages 100000\nmax_inflight_messages 100\n";

fn start_broker() -> Mosquitto {
    Mosquitto::start(SETTINGS).unwrap_or_else(|e| panic!("{e}"))
}

/// A `mosquitto_sub` that has subscribed (see `mosquitto_launcher::observer`) and prints
/// `count` messages or gives up after `wait_s`.
fn observer(port: u16, topic: &str, count: u32, wait_s: u32) -> Child {
    mosquitto_launcher::observer(port, topic, count, wait_s, &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn cfg(port: u16, id: &str, v5: bool) -> Config {
    let mut c = default_config("127.0.0.1", id);
    c.port = Some(port);
    c.mqttv5 = v5;
    c.keepalive_secs = 10;
    c.response_time_ms = 2_000;
    c
}

/// The embedded component on the board's platform, with `config`.
fn device(config: Config) -> Device {
    let component = ComponentFile::embedded().unwrap();
    let platform = TokioPlatform::for_config(&config);
    Device::new(&component, Box::new(platform), config, "test").unwrap()
}

async fn client(config: Config) -> Client {
    let c = Client::spawn(device(config));
    c.connect().await.expect("connects to mosquitto");
    c
}

fn sub(filter: &str, qos: Qos) -> Vec<Subscription> {
    vec![Subscription { filter: filter.into(), qos, no_local: false, retain_as_published: false, retain_handling: 0 }]
}

async fn next_message(c: &mut Client) -> mqtt_host::Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.next_event()).await {
            Ok(Some(ClientEvent::Message(m))) => return m,
            Ok(Some(_)) => continue,
            other => panic!("no message: {other:?}"),
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn pub_sub_round_trip_qos_0_1_2_on_v311_and_v5() {
    let broker = start_broker();
    rt().block_on(async {
        for v5 in [false, true] {
            let mut subscriber = client(cfg(broker.port, &format!("sub-{v5}"), v5)).await;
            assert_eq!(subscriber.subscribe(sub("rt/#", Qos::ExactlyOnce)).await.unwrap(), vec![2]);
            let publisher = client(cfg(broker.port, &format!("pub-{v5}"), v5)).await;
            for (i, q) in [Qos::AtMostOnce, Qos::AtLeastOnce, Qos::ExactlyOnce].into_iter().enumerate() {
                let payload = format!("v5={v5} qos={i}");
                publisher.publish(&format!("rt/{i}"), payload.as_bytes(), q, false).await.expect("acknowledged by mosquitto");
                let m = next_message(&mut subscriber).await;
                assert_eq!((m.topic.as_str(), m.payload.as_slice()), (format!("rt/{i}").as_str(), payload.as_bytes()));
                assert_eq!(m.qos as u8, i as u8);
            }
            publisher.disconnect().await;
            subscriber.disconnect().await;
        }
    });
}

#[test]
fn retained_message_reaches_a_later_subscriber() {
    let broker = start_broker();
    rt().block_on(async {
        let publisher = client(cfg(broker.port, "ret-pub", false)).await;
        publisher.publish("ret/state", b"on", Qos::AtLeastOnce, true).await.unwrap();
        let mut late = client(cfg(broker.port, "ret-sub", true)).await;
        late.subscribe(sub("ret/#", Qos::AtLeastOnce)).await.unwrap();
        let m = next_message(&mut late).await;
        assert!(m.retained);
        assert_eq!(m.payload, b"on");
    });
}

#[test]
fn qos1_stream_reaches_a_mosquitto_sub_observer_in_order() {
    let broker = start_broker();
    let observer = observer(broker.port, "obs/#", 200, 30);
    rt().block_on(async {
        let publisher = client(cfg(broker.port, "obs-pub", false)).await;
        for i in 0..200 {
            publisher.publish("obs/seq", i.to_string().as_bytes(), Qos::AtLeastOnce, false).await.unwrap();
        }
    });
    let out = observer.wait_with_output().unwrap();
    let got: Vec<u32> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn will_is_published_when_the_client_is_killed() {
    let broker = start_broker();
    let observer = observer(broker.port, "will/status", 1, 20);
    let mut board = Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
        .args(["pub", "-H", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "will/data", "-q", "1", "--interval", "200ms", "--count", "1000"])
        .args(["-k", "2", "--response-time-ms", "1000", "--will", "will/status", "gone"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    board.kill().unwrap(); // SIGKILL: no DISCONNECT
    let _ = board.wait();
    let out = observer.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "gone");
}

/// The other side of the will: an application that drops every handle to its client (the
/// `Client` and its clones) ends the client task with a DISCONNECT, so the broker discards
/// the will. Without it, the socket closing as the task ends makes Mosquitto publish the will
/// at once, and the observer's first message would be it rather than the marker.
#[test]
fn dropping_every_handle_disconnects_so_no_will_is_published() {
    let broker = start_broker();
    let observer = observer(broker.port, "handles/status", 1, 20);
    rt().block_on(async {
        let mut config = cfg(broker.port, "handles-gone", false);
        config.will = Some(mqtt_host::Will {
            topic: "handles/status".into(),
            payload: b"gone".to_vec(),
            qos: Qos::AtLeastOnce,
            retain: false,
            delay_secs: None,
            properties: None,
        });
        let c = client(config).await;
        let other = c.clone();
        drop(c);
        drop(other);
        // The task disconnects and ends on its next turn; a will would be out by then.
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let marker = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "handles/status", "-q", "1", "-m", "still-quiet"])
        .status()
        .unwrap();
    assert!(marker.success());
    let out = observer.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "still-quiet", "the will was published: no DISCONNECT when the handles went");
}

#[test]
fn stdin_lines_are_all_acknowledged_before_exit() {
    let broker = start_broker();
    let observer = observer(broker.port, "lines", 50, 20);
    let mut board = Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
        .args(["pub", "-H", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "lines", "-q", "1", "--stdin-lines"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = board.stdin.take().unwrap();
        for i in 0..50 {
            writeln!(stdin, "line {i}").unwrap();
        }
    }
    assert!(board.wait().unwrap().success());
    let out = observer.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 50);
}

/// A 3.1.1 broker cannot announce its packet size limit; Mosquitto drops a client that goes
/// over it. The publish is resent on each reconnect, so every connection dies at once: the
/// client backs off as from refused attempts (about 0.2, 0.4, 0.8, 1.6, 3.2 s, at most 6
/// connections in 5 s) where it reconnected every 125–250 ms, 20 or more.
#[test]
fn a_publish_a_3_1_1_broker_drops_us_for_is_retried_with_a_growing_backoff() {
    let broker = Mosquitto::start("max_packet_size 200\n").unwrap_or_else(|e| panic!("{e}"));
    let payload = "x".repeat(500);
    let mut board = Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
        .args(["pub", "-H", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "big", "-q", "1", "-c", "-i", "too-big", "-m", &payload])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    board.kill().unwrap();
    board.wait().unwrap();
    let log = std::fs::read_to_string(broker.dir().join("mosquitto.log")).unwrap();
    let connects = log.lines().filter(|l| l.contains("New client connected") && l.contains("as too-big")).count();
    let dropped = log.lines().filter(|l| l.contains("too-big disconnected due to oversize packet")).count();
    assert!(dropped >= 3, "Mosquitto dropped the client {dropped} times for the oversize publish:\n{log}");
    assert!(connects <= 7, "{connects} connections in 5 s:\n{log}");
}

#[test]
fn connections_to_other_addresses_are_refused() {
    let broker = start_broker();
    rt().block_on(async {
        let component = ComponentFile::embedded().unwrap();
        // Allowed list names another port: the component's open must be refused.
        let platform = TokioPlatform::new(vec![("127.0.0.1".into(), 1)]);
        let device = Device::new(&component, Box::new(platform), cfg(broker.port, "nope", false), "test").unwrap();
        let c = Client::spawn(device);
        let err = c.connect().await.unwrap_err();
        assert!(err.to_string().contains("not permitted") || err.to_string().contains("NotPermitted"), "{err}");
    });
}

#[test]
fn tls_round_trip_with_a_generated_ca_and_a_clear_error_with_the_wrong_one() {
    let port = mosquitto_launcher::free_port().unwrap();
    let tmp = tempfile::Builder::new().prefix("mqtt-board-tls-").tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let good = mosquitto_launcher::tls_certs(&dir, "good").unwrap();
    let wrong_ca = mosquitto_launcher::tls_certs(&dir, "other").unwrap().ca;
    let ca = good.ca.clone();
    let _broker = Mosquitto::start_with_config(port, &good.listener(port), tmp).unwrap_or_else(|e| panic!("{e}"));
    let run = |tls: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
            .args(["pub", "-H", "127.0.0.1", "-p", &port.to_string(), "-t", "tls/t", "-m", "secret", "-q", "1", "--response-time-ms", "2000"])
            .args(tls)
            .output()
            .unwrap()
    };
    let ok = run(&["--cafile", ca.to_str().unwrap()]);
    assert!(ok.status.success(), "TLS publish failed: {}", String::from_utf8_lossy(&ok.stderr));
    // Offering ALPN (as AWS IoT on port 443 needs) does not upset a broker that ignores it.
    let alpn = run(&["--cafile", ca.to_str().unwrap(), "--alpn", "x-amzn-mqtt-ca"]);
    assert!(alpn.status.success(), "TLS publish with ALPN failed: {}", String::from_utf8_lossy(&alpn.stderr));
    let bad = run(&["--cafile", wrong_ca.to_str().unwrap()]);
    assert!(!bad.status.success(), "a wrong CA must not connect");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("TLS"), "the error should say TLS failed: {err}");
    // The system's roots do not know the test CA either.
    let system = run(&["--tls"]);
    assert!(!system.status.success(), "an unknown CA must not connect with verification on");
    // --insecure connects to the same broker without any CA, and says loudly that it did.
    let insecure = run(&["--insecure"]);
    let err = String::from_utf8_lossy(&insecure.stderr);
    assert!(insecure.status.success(), "--insecure publish failed: {err}");
    assert!(err.contains("verification is OFF"), "--insecure must be logged: {err}");
}

#[test]
fn a_config_file_supplies_the_connection_and_flags_override_it() {
    let broker = start_broker();
    let dir = tempfile::Builder::new().prefix("mqtt-board-conf-").tempdir().unwrap();
    let conf = dir.path().join("board.toml");
    // A wrong port in the file: the flag must win.
    std::fs::write(&conf, "host = \"127.0.0.1\"\nport = 1\nid = \"from-file\"\nkeepalive = 10\nresponse_time_ms = 2000\n").unwrap();
    let observer = observer(broker.port, "conf/t", 1, 20);
    let ok = Command::new(env!("CARGO_BIN_EXE_mqtt-board"))
        .args(["pub", "--config", conf.to_str().unwrap(), "-p", &broker.port.to_string(), "-t", "conf/t", "-m", "via file", "-q", "1"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&observer.wait_with_output().unwrap().stdout).trim(), "via file");

    std::fs::write(&conf, "host = \"127.0.0.1\"\nkeep_alive = 10\n").unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_mqtt-board")).args(["pub", "--config", conf.to_str().unwrap(), "-t", "t", "-m", "x"]).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(err.contains("line 2") && err.contains("keep_alive"), "the error should name the line and key: {err}");
}

/// MQTT 5 subscription identifiers through Mosquitto: each message names the subscriptions
/// it matched, and after a broker restart (sessions gone) the client's re-subscription
/// carries the identifiers again.
#[test]
fn v5_subscription_identifiers_come_back_on_messages_and_survive_a_broker_restart() {
    let broker = start_broker();
    let port = broker.port;
    let rt = rt();
    let (mut subscriber, publisher) = rt.block_on(async {
        let subscriber = client(cfg(port, "sid-sub", true)).await;
        let props = |id| SubscribeProperties { subscription_id: Some(id), user_properties: vec![("why".into(), "test".into())] };
        assert_eq!(subscriber.subscribe_with(sub("sid/b/#", Qos::AtLeastOnce), props(42)).await.unwrap(), vec![1]);
        assert_eq!(subscriber.subscribe_with(sub("sid/a", Qos::AtLeastOnce), props(7)).await.unwrap(), vec![1]);
        (subscriber, client(cfg(port, "sid-pub", true)).await)
    });
    let ids = |m: &mqtt_host::Message| {
        let mut ids = m.properties.as_ref().expect("v5 properties").subscription_ids.clone();
        ids.sort();
        ids
    };
    rt.block_on(async {
        publisher.publish("sid/a", b"1", Qos::AtLeastOnce, false).await.unwrap();
        assert_eq!(ids(&next_message(&mut subscriber).await), vec![7]);
        publisher.publish("sid/b/x", b"2", Qos::AtLeastOnce, false).await.unwrap();
        assert_eq!(ids(&next_message(&mut subscriber).await), vec![42]);
    });
    let broker = broker.restart().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        // Both clients reconnect by themselves; the subscriber renews its subscriptions.
        let mut sent = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if publisher.publish("sid/a", b"3", Qos::AtLeastOnce, false).await.is_ok() {
                sent = true;
                break;
            }
        }
        assert!(sent, "publisher never got through to the restarted broker");
        // The first publish may beat the subscriber's renewal; publish until one arrives.
        let m = loop {
            match tokio::time::timeout(Duration::from_millis(500), subscriber.next_event()).await {
                Ok(Some(ClientEvent::Message(m))) => break m,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("subscriber stopped"),
                Err(_) => publisher.publish("sid/a", b"3", Qos::AtLeastOnce, false).await.unwrap(),
            }
        };
        assert_eq!(ids(&m), vec![7], "identifiers renewed with the subscriptions");
        publisher.publish("sid/b/y", b"4", Qos::AtLeastOnce, false).await.unwrap();
        // Skip further copies of the retried "3" on sid/a.
        let m = loop {
            let m = next_message(&mut subscriber).await;
            if m.topic != "sid/a" {
                break m;
            }
        };
        assert_eq!((m.topic.as_str(), ids(&m)), ("sid/b/y", vec![42]), "each request renewed with its own identifier");
    });
    drop(broker);
}

/// Backpressure against Mosquitto: `mosquitto_pub` sends 2000 QoS 1 messages as fast as it
/// can while the application takes one every 2 ms. With `queue_len = 8` and `backpressure`,
/// every message arrives, in order, none discarded; the same run without backpressure
/// discards (the test checks both, so it shows what the mode changes).
#[test]
fn backpressure_delivers_everything_to_a_slow_application_where_discard_oldest_drops() {
    use std::io::Write;
    let broker = start_broker();
    let rt = rt();
    for backpressure in [true, false] {
        let topic = format!("slow/{backpressure}");
        let (received, discarded) = rt.block_on(async {
            let mut c = cfg(broker.port, &format!("slow-{backpressure}"), false);
            c.queue_len = 8;
            c.backpressure = backpressure;
            let mut subscriber = client(c).await;
            subscriber.subscribe(sub(&topic, Qos::AtLeastOnce)).await.unwrap();
            let (port, t) = (broker.port, topic.clone());
            let publisher = tokio::task::spawn_blocking(move || {
                let mut child = Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", &t, "-l"])
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("mosquitto_pub (mosquitto-clients) must be installed; .ci/run installs it");
                let mut stdin = child.stdin.take().unwrap();
                for i in 0..2000 {
                    writeln!(stdin, "{i}").unwrap();
                }
                drop(stdin);
                assert!(child.wait().unwrap().success());
            });
            let mut received: Vec<u32> = Vec::new();
            let mut discarded = 0;
            loop {
                match tokio::time::timeout(Duration::from_secs(3), subscriber.next_event()).await {
                    Ok(Some(ClientEvent::Message(m))) => {
                        received.push(std::str::from_utf8(&m.payload).unwrap().parse().unwrap());
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Ok(Some(ClientEvent::Discarded(n))) => discarded = n,
                    Ok(Some(ClientEvent::Down(d))) => panic!("connection dropped under backpressure: {d:?}"),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            publisher.await.unwrap();
            (received, discarded)
        });
        if backpressure {
            assert_eq!(received.len(), 2000, "every message ({discarded} discarded)");
            assert_eq!(received, (0..2000).collect::<Vec<_>>(), "in order");
            assert_eq!(discarded, 0);
        } else {
            assert!(discarded > 0, "without backpressure a slow application loses messages ({} received)", received.len());
            assert!(received.windows(2).all(|w| w[0] < w[1]), "what arrives is in order");
        }
    }
}

/// The defaults lose nothing: a subscriber with `default_config` (nothing tuned: queue_len 64,
/// backpressure on) and an application that takes each message as it comes, while
/// `mosquitto_pub -l` sends 10,000 messages as fast as Mosquitto forwards them, at QoS 0, 1
/// and 2. Every message arrives, in order, none discarded. (With `backpressure = false` the
/// same run discarded thousands: one poll read ~256 KiB, far more than `queue_len`.)
#[test]
fn defaults_lose_nothing_at_full_broker_speed_qos_0_1_2() {
    const N: u32 = 10_000;
    let broker = start_broker();
    let rt = rt();
    for qos in [Qos::AtMostOnce, Qos::AtLeastOnce, Qos::ExactlyOnce] {
        let q = qos as u8;
        let topic = format!("flood/{q}");
        let (received, discarded, stats_discards) = rt.block_on(async {
            let mut c = default_config("127.0.0.1", &format!("flood-{q}"));
            c.port = Some(broker.port);
            let mut subscriber = client(c).await;
            subscriber.subscribe(sub(&topic, qos)).await.unwrap();
            let publisher = flood(broker.port, &topic, q, N);
            let mut received: Vec<u32> = Vec::new();
            let mut discarded = 0;
            while received.len() < N as usize {
                match tokio::time::timeout(Duration::from_secs(5), subscriber.next_event()).await {
                    Ok(Some(ClientEvent::Message(m))) => received.push(std::str::from_utf8(&m.payload).unwrap().parse().unwrap()),
                    Ok(Some(ClientEvent::Discarded(n))) => discarded = n,
                    Ok(Some(ClientEvent::Down(d))) => panic!("connection dropped: {d:?}"),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            publisher.await.unwrap();
            let stats = subscriber.stats().await.expect("stats");
            subscriber.disconnect().await;
            (received, discarded, stats.discards)
        });
        assert_eq!((discarded, stats_discards), (0, 0), "QoS {q}: nothing discarded with the defaults");
        assert_eq!(received.len(), N as usize, "QoS {q}: every message");
        assert!(received.iter().copied().eq(0..N), "QoS {q}: in order");
    }
}

/// The same promise from `Client::new`'s event loop, which the application polls itself
/// (rumqttc's shape) instead of reading a spawned task's stream: with the defaults, an
/// application slow at first (2 ms a message for the first 300, so the queue fills and the
/// client stops reading) and then quick, while `mosquitto_pub -l` sends 5,000 QoS 1
/// messages: every one arrives, in order, none discarded. Once the loop is dropped, a
/// handle's calls fail (`Stopped`) instead of waiting for a loop no one polls.
#[test]
fn an_event_loop_polled_by_the_application_loses_nothing_with_the_defaults() {
    const N: u32 = 5_000;
    let broker = start_broker();
    rt().block_on(async {
        let mut c = default_config("127.0.0.1", "event-loop");
        c.port = Some(broker.port);
        let (client, mut event_loop) = Client::new(device(c));
        driving(&mut event_loop, client.connect()).await.expect("connects to mosquitto");
        driving(&mut event_loop, client.subscribe(sub("loop/flood", Qos::AtLeastOnce))).await.unwrap();
        let publisher = flood(broker.port, "loop/flood", 1, N);
        let mut received: Vec<u32> = Vec::new();
        let mut discarded = 0;
        while received.len() < N as usize {
            match tokio::time::timeout(Duration::from_secs(5), event_loop.poll()).await {
                Ok(Some(ClientEvent::Message(m))) => {
                    received.push(std::str::from_utf8(&m.payload).unwrap().parse().unwrap());
                    if received.len() <= 300 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                Ok(Some(ClientEvent::Discarded(n))) => discarded = n,
                Ok(Some(ClientEvent::Down(d))) => panic!("connection dropped: {d:?}"),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        publisher.await.unwrap();
        let stats = driving(&mut event_loop, client.stats()).await.expect("stats");
        assert_eq!((discarded, stats.discards), (0, 0), "nothing discarded with the defaults");
        assert_eq!(received.len(), N as usize, "every message");
        assert!(received.iter().copied().eq(0..N), "in order");
        drop(event_loop);
        let after = client.publish("loop/after", "x", Qos::AtLeastOnce, false).await;
        assert!(matches!(after, Err(mqtt_host::ClientCallError::Stopped)), "{after:?}");
    });
}

/// `mosquitto_pub -l` sending the numbers 0..n to `topic` as fast as Mosquitto takes them.
fn flood(port: u16, topic: &str, qos: u8, n: u32) -> tokio::task::JoinHandle<()> {
    use std::io::Write;
    let (port, topic) = (port.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", &qos.to_string(), "-t", &topic, "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub (mosquitto-clients) must be installed; .ci/run installs it");
        let mut stdin = child.stdin.take().unwrap();
        let lines: String = (0..n).map(|i| format!("{i}\n")).collect();
        stdin.write_all(lines.as_bytes()).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
    })
}

/// Awaits `f` while polling `event_loop` (its client runs only while polled).
async fn driving<T>(event_loop: &mut mqtt_host::EventLoop, f: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(f);
    loop {
        tokio::select! {
            r = &mut f => return r,
            e = event_loop.poll() => assert!(e.is_some(), "the client stopped"),
        }
    }
}
