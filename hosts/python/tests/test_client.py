"""The Python host against a real Mosquitto: the guarantees hold with the defaults, through
an outage, over TLS; bad input is refused with the key named."""

import logging
import os
import signal
import threading
import time

import pytest

from mqtt_component import Client, ClientError, ClientFailed, ConfigError, Tls, Will


def run_until(clients, done, timeout=20.0, events=None):
    """Polls every client in turn, collecting its events, until `done(events)` (the events
    of each client, a dict by client) or `timeout` seconds; returns the events (`events`,
    when given, is added to)."""
    events = {c: [] for c in clients} if events is None else events
    end = time.monotonic() + timeout
    while not done(events):
        if time.monotonic() > end:
            summary = {id(c): [e.kind for e in evs][-10:] for c, evs in events.items()}
            raise AssertionError(f"not done within {timeout} s; last events: {summary}")
        for c in clients:
            events[c] += c.poll(0.005)
    return events


def kinds(events, kind):
    return [e.value for e in events if e.kind == kind]


def persistent_subscriber(mosquitto, tmp_path, client_id, topic):
    """A Mosquitto that keeps its sessions across a restart (SIGTERM saves them), and a
    subscriber to `topic` at QoS 1 whose session outlives its connections."""
    persist = tmp_path / "persist"
    persist.mkdir()
    broker = mosquitto(f"persistence true\npersistence_location {persist}/\n")
    sub = Client("127.0.0.1", client_id, port=broker.port, clean_init=False, clean=False)
    connected(sub)
    sub.subscribe(topic, 1)
    run_until([sub], lambda ev: kinds(ev[sub], "subscribed"))
    return broker, sub


def connected(client):
    client.connect()
    got = run_until([client], lambda ev: kinds(ev[client], "up") or kinds(ev[client], "connect-failed"), 10)[client]
    assert kinds(got, "up"), f"no connection: {got}"
    return got


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_subscriber_with_the_defaults_loses_nothing_at_full_speed(mosquitto, qos):
    """The publisher runs flat out on a thread of its own; the subscriber, every setting at
    its default, takes every message, in order, with none discarded."""
    broker = mosquitto()
    count = 3000
    sub = Client("127.0.0.1", f"py-sub-{qos}", port=broker.port)
    connected(sub)
    token = sub.subscribe("py/flood", qos)
    got = run_until([sub], lambda ev: kinds(ev[sub], "subscribed"))[sub]
    assert kinds(got, "subscribed") == [(token, [qos])], "granted as asked, under the token subscribe returned"

    pub = Client("127.0.0.1", f"py-pub-{qos}", port=broker.port)
    connected(pub)
    failures = []

    def publish_all():
        try:
            sent = done = 0
            while done < count:
                # As many as the client takes (`max_queued` outstanding), then poll.
                while sent < count and sent - done < 512:
                    try:
                        pub.publish("py/flood", sent.to_bytes(4, "big"), qos)
                    except ClientError as e:
                        assert e.kind == "queue-full", e
                        break
                    sent += 1
                done += len(kinds(pub.poll(0.01), "published"))
        except Exception as e:  # noqa: BLE001 - reported by the test below
            failures.append(e)

    t = threading.Thread(target=publish_all)
    t.start()
    got = []
    end = time.monotonic() + 60
    while len(got) < count and time.monotonic() < end:
        got += [int.from_bytes(m.payload, "big") for m in kinds(sub.poll(0.5), "message")]
    t.join(60)
    assert not failures, failures
    assert got == list(range(count)), f"received {len(got)} of {count}"
    assert sub.stats()["discards"] == 0
    pub.close()
    sub.close()


def test_a_batch_answers_each_publish_and_tracks_every_one_taken(mosquitto):
    """`publish_many` answers each publish: its token, or the `ClientError` that refused it.
    One refused as invalid does not stop those after it, and every one taken completes under
    the token it was given. Before, the answer stopped at the refusal, and those after it were
    sent all the same, under tokens the application never had (and a restart would not have
    handed them back)."""
    broker = mosquitto()
    sub = Client("127.0.0.1", "py-batch-sub", port=broker.port)
    connected(sub)
    sub.subscribe("py/batch", 1)
    run_until([sub], lambda ev: kinds(ev[sub], "subscribed"))
    pub = Client("127.0.0.1", "py-batch-pub", port=broker.port)
    connected(pub)
    answers = pub.publish_many([("py/batch", b"1", 1, False), ("py/+", b"2", 1, False), ("py/batch", b"3", 1, False)])
    assert isinstance(answers[1], ClientError) and answers[1].kind == "invalid", answers
    with pytest.raises(ClientError, match="invalid"):
        pub.publish("py/+", b"4", 1)
    tokens = [answers[0], answers[2], pub.publish("py/batch", b"5", 1)]
    assert all(isinstance(t, int) for t in tokens), answers
    got = run_until([sub, pub], lambda ev: len(kinds(ev[sub], "message")) == 3 and len(kinds(ev[pub], "published")) == 3)
    assert [m.payload for m in kinds(got[sub], "message")] == [b"1", b"3", b"5"]
    assert kinds(got[pub], "published") == tokens
    pub.close()
    sub.close()


def test_a_broker_outage_loses_no_qos1_message(mosquitto, tmp_path):
    """Mosquitto goes down (saving its sessions) with publishes in flight and more published
    while it is down; once it is back, both clients reconnect by themselves and the
    subscriber, on its resumed session, gets every message."""
    broker, sub = persistent_subscriber(mosquitto, tmp_path, "py-outage-sub", "py/outage")
    pub = Client("127.0.0.1", "py-outage-pub", port=broker.port)
    connected(pub)

    everything = {pub: [], sub: []}
    for i in range(50):
        pub.publish("py/outage", b"%d" % i, 1)
    everything[pub] += pub.poll(0)  # the first ones leave
    broker.stop(signal.SIGTERM)
    run_until([pub, sub], lambda ev: kinds(ev[pub], "down") and kinds(ev[sub], "down"), 10, everything)
    for i in range(50, 100):
        pub.publish("py/outage", b"%d" % i, 1)
    time.sleep(0.5)
    broker.start()

    all_sent = {b"%d" % i for i in range(100)}
    got = run_until(
        [pub, sub],
        lambda ev: len(set(kinds(ev[pub], "published"))) == 100 and {m.payload for m in kinds(ev[sub], "message")} >= all_sent,
        30,
        everything,
    )
    received = [m.payload for m in kinds(got[sub], "message")]
    assert all_sent <= set(received)
    assert not kinds(got[pub], "publish-failed")
    assert pub.stats()["reconnects"] >= 1 and sub.stats()["reconnects"] >= 1
    pub.close()
    sub.close()


def test_the_will_is_sent_when_the_connection_breaks(mosquitto):
    broker = mosquitto()
    watcher = Client("127.0.0.1", "py-will-watcher", port=broker.port)
    connected(watcher)
    watcher.subscribe("py/will", 1)
    run_until([watcher], lambda ev: kinds(ev[watcher], "subscribed"))
    dying = Client("127.0.0.1", "py-will-dying", port=broker.port, will=Will("py/will", b"gone", qos=1))
    connected(dying)
    dying.close()  # the socket closes with no DISCONNECT: the broker must send the will
    got = run_until([watcher], lambda ev: kinds(ev[watcher], "message"), 10)[watcher]
    assert [(m.topic, m.payload) for m in kinds(got, "message")] == [("py/will", b"gone")]
    watcher.close()


def test_tls_with_a_ca_of_our_own(mosquitto, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    broker = mosquitto(f"cafile {tmp_path}/ca.pem\ncertfile {tmp_path}/cert.pem\nkeyfile {tmp_path}/key.pem\n")
    tls = Tls(server_name="localhost", ca_file=str(tmp_path / "ca.pem"))
    client = Client("127.0.0.1", "py-tls", port=broker.port, ssl=True, ssl_params=tls)
    connected(client)
    client.subscribe("py/tls", 1)
    client.publish("py/tls", b"over tls", 1)
    got = run_until([client], lambda ev: kinds(ev[client], "message"))[client]
    assert [m.payload for m in kinds(got, "message")] == [b"over tls"]
    client.close()

    # A certificate no CA of ours signed: the handshake fails, and the client says so.
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    stranger = Client("127.0.0.1", "py-tls-stranger", port=broker.port, ssl=True, ssl_params=Tls("localhost", ca_file=str(tmp_path / "other.pem")))
    stranger.connect()
    got = run_until([stranger], lambda ev: kinds(ev[stranger], "connect-failed"), 10)[stranger]
    assert "tls" in kinds(got, "connect-failed")[0].lower()
    stranger.close()


def test_nothing_listening_is_a_connect_failure_not_a_hang(mosquitto):
    broker = mosquitto()
    port = broker.port
    broker.stop()
    client = Client("127.0.0.1", "py-refused", port=port)
    client.connect()
    got = run_until([client], lambda ev: kinds(ev[client], "connect-failed"), 10)[client]
    assert "refused" in kinds(got, "connect-failed")[0]
    client.close()


def test_a_wrong_config_value_is_refused_naming_the_key():
    # Of the right type but unworkable: the component's own check names the key.
    with pytest.raises(ClientError) as e:
        Client("127.0.0.1", "py-bad", port=0)
    assert e.value.kind == "invalid" and "port" in str(e.value)
    with pytest.raises(ClientError) as e:
        Client("127.0.0.1", "py-bad", keepalive_s=30, mqttv5=True, receive_maximum=0)
    assert "receive_maximum" in str(e.value)
    # Of the wrong type, or no key at all: refused here, before anything runs.
    with pytest.raises(ConfigError, match="keepalive_s"):
        Client("127.0.0.1", "py-bad", keepalive_s="thirty")
    with pytest.raises(ConfigError, match="max_inflight.*out of range"):
        Client("127.0.0.1", "py-bad", max_inflight=70000)
    with pytest.raises(ConfigError, match="no such key"):
        Client("127.0.0.1", "py-bad", keep_alive=30)
    with pytest.raises(ConfigError, match="will"):
        Client("127.0.0.1", "py-bad", will=Will("t", b"x", qos=3))


def test_settings_take_the_names_a_settings_file_gives_them(mosquitto):
    """`keepalive_s` (the file's name) and `keepalive_secs` (the field's) are one key, as in a
    scenario's `[device]` table or the board's `--config` file."""
    from mqtt_component._config import config_value

    a = Client("127.0.0.1", "py-names", keepalive_s=17, session_expiry_s=5, v5=True)
    b = Client("127.0.0.1", "py-names", keepalive_secs=17, session_expiry_secs=5, mqttv5=True)
    for c in (a, b):
        assert config_value(c.config, "keepalive_secs") == 17
        assert config_value(c.config, "session_expiry_secs") == 5
        # The rest are the core's defaults: nothing acknowledged is ever dropped.
        assert config_value(c.config, "backpressure") is True
        c.close()


PUBLISH_THEN_WAIT = """
import sys, time
sys.path.insert(0, {root!r})
from mqtt_component import Client
client = Client("127.0.0.1", "py-stored", port={port}, store={store!r})
client.connect()
tokens = [client.publish("py/stored", b"%d" % i, 1) for i in range(20)]
client.poll(0)
print("accepted", len(tokens), flush=True)
time.sleep(60)
"""


def test_a_store_keeps_what_a_killed_process_accepted(mosquitto, tmp_path):
    """A process accepts 20 QoS 1 publishes while the broker is down and is killed
    (SIGKILL: no chance to save anything then); the next client on its store file sends
    them all once the broker is back."""
    import subprocess
    import sys
    from pathlib import Path

    broker, sub = persistent_subscriber(mosquitto, tmp_path, "py-stored-sub", "py/stored")
    broker.stop(signal.SIGTERM)

    store = tmp_path / "client.flash"
    script = PUBLISH_THEN_WAIT.format(root=str(Path(__file__).resolve().parents[1]), port=broker.port, store=str(store))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "accepted 20"
    finally:
        proc.kill()
        proc.wait(5)

    broker.start()
    again = Client("127.0.0.1", "py-stored", port=broker.port, store=store)
    again.connect()
    everything = {again: [], sub: []}
    want = {b"%d" % i for i in range(20)}
    run_until([again, sub], lambda ev: {m.payload for m in kinds(ev[sub], "message")} >= want and len(kinds(ev[again], "published")) >= 20, 30, everything)
    assert not kinds(everything[again], "publish-failed")
    again.close()
    sub.close()


def test_a_trap_after_disconnect_leaves_the_store_as_it_was(mosquitto, tmp_path):
    """`disconnect` reports each unacknowledged publish `publish-failed` code 1: the store
    keeps it for the next client. A trap after that hands the fresh instance nothing more (it
    has them from the store), so the next client sends each QoS 2 message once. Before, the
    host handed them over again as new publishes, the store held each twice, and the next
    client sent each twice."""
    broker = mosquitto()
    sub = Client("127.0.0.1", "py-kept-sub", port=broker.port)
    connected(sub)
    sub.subscribe("py/kept", 2)
    run_until([sub], lambda ev: kinds(ev[sub], "subscribed"))
    store = tmp_path / "client.flash"
    first = Client("127.0.0.1", "py-kept", port=broker.port, store=store)
    tokens = [first.publish("py/kept", b"%d" % i, 2) for i in range(3)]
    first.disconnect()
    got = run_until([first], lambda ev: len(kinds(ev[first], "publish-failed")) == 3, 10)[first]
    assert sorted(kinds(got, "publish-failed")) == [(t, 1) for t in tokens]
    first._live.starve_next = True
    first.poll(0.1)
    assert first.restarts == 1
    first.close()
    again = Client("127.0.0.1", "py-kept", port=broker.port, store=store)
    again.connect()
    everything = {again: [], sub: []}
    run_until([again, sub], lambda ev: len(kinds(ev[again], "published")) >= 3 and len(kinds(ev[sub], "message")) >= 3, 30, everything)
    for _ in range(10):  # time for a second copy to arrive, were there one
        for c in (again, sub):
            everything[c] += c.poll(0.05)
    assert sorted(m.payload for m in kinds(everything[sub], "message")) == [b"0", b"1", b"2"]
    again.close()
    sub.close()


def test_a_file_that_is_not_a_store_is_refused_and_left_alone(tmp_path):
    from mqtt_component import StoreError

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a flash image\n")
    with pytest.raises(StoreError, match="not a store file"):
        Client("127.0.0.1", "py-wrong-file", store=notes)
    assert notes.read_text() == "my notes, not a flash image\n"

    # One store serves one client: a second one on the same file is refused.
    store = tmp_path / "one.flash"
    first = Client("127.0.0.1", "py-first", store=store)
    with pytest.raises(StoreError, match="in use"):
        Client("127.0.0.1", "py-second", store=store)
    first.close()
    Client("127.0.0.1", "py-second", store=store).close()


def test_a_store_a_node_client_has_is_refused_and_a_stale_lock_file_taken_over(tmp_path, caplog):
    """A Node client marks a store it has with `PATH.lock` (it cannot `flock`): while its
    process lives, this host refuses the store, as Node refuses one this host has. A lock file
    whose process is gone, or one a host that `flock`s left, is taken over and logged; this
    host's own goes when the store closes."""
    from mqtt_component import StoreError
    from mqtt_component._store import FileFlash

    store, lock, me = tmp_path / "store.flash", tmp_path / "store.flash.lock", os.getpid()
    flash = FileFlash(str(store))
    assert lock.read_text() == f"{me} python\n"
    flash.close()
    assert not lock.exists()

    # This test's own pid stands for a live Node process; the format Node writes now, and
    # the one it wrote before. Refused, the lock file and the store left as they are.
    before = store.read_bytes()
    for text in (f"{me} node\n", f"{me}\n"):
        lock.write_text(text)
        with pytest.raises(StoreError, match=f"process {me}, the node host"):
            FileFlash(str(store))
        assert lock.read_text() == text
        assert store.read_bytes() == before

    for text, why in [
        ("999999999 node\n", "process 999999999 (node) is gone"),
        (f"{me} rust\n", f"process {me} (rust) no longer has the store"),
        ("", "it names no process"),
    ]:
        lock.write_text(text)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mqtt_component"):
            flash = FileFlash(str(store))
        assert f"took over the lock file: {why}" in caplog.text
        assert lock.read_text() == f"{me} python\n"
        flash.close()
        assert not lock.exists()

    # A lock file that is a link to nowhere can be neither made nor read: refused after a
    # few tries, not tried for ever.
    lock.symlink_to(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="another client is taking this store at the same moment"):
        FileFlash(str(store))


def flood_with_a_trap(broker, qos, count, trap_in, store=None, clean_init=False):
    """`count` publishes at `qos` from one client to another, flat out; once a third of them
    are acknowledged, the next call into `trap_in`'s ("pub" or "sub") component traps.
    Returns the publisher's tokens, the tokens it saw completed, the payloads received, and
    both clients."""
    # Both sessions outlive their connections: a clean one drops what the broker held for
    # the client (the subscriber's queued messages, the publisher's half of each QoS 2
    # exchange), so only these promise delivery, and QoS 2 exactly once, across a restart.
    # With `clean_init` (mqtt_as's usual choice) the session is purged at power-up and kept
    # from then on: the fresh instance resumes it all the same.
    sub = Client("127.0.0.1", f"py-trap-sub-{qos}", port=broker.port, clean_init=clean_init, clean=False)
    connected(sub)
    sub.subscribe("py/trap", qos)
    run_until([sub], lambda ev: kinds(ev[sub], "subscribed"))
    pub = Client("127.0.0.1", f"py-trap-pub-{qos}", port=broker.port, clean_init=clean_init, clean=False, store=store)
    connected(pub)
    tokens, completed, received = [], [], []
    trapped = False
    end = time.monotonic() + 60
    while (len(received) < count or len(completed) < count) and time.monotonic() < end:
        while len(tokens) < count and len(tokens) - len(completed) < 100:
            tokens.append(pub.publish("py/trap", b"%d" % len(tokens), qos))
        if not trapped and len(completed) >= count // 3:
            trapped = True
            (pub if trap_in == "pub" else sub)._live.starve_next = True
        for e in pub.poll(0.002):
            if e.kind == "published":
                completed.append(e.value)
            assert e.kind != "publish-failed", e
        received += [m.payload for m in kinds(sub.poll(0.002), "message")]
    return tokens, completed, received, pub, sub


@pytest.mark.parametrize("clean_init", [False, True])
@pytest.mark.parametrize("with_store", [False, True])
def test_a_trap_in_the_publisher_loses_nothing_and_qos2_stays_exactly_once(mosquitto, tmp_path, with_store, clean_init):
    """The publisher's component fails mid-flood; the fresh instance resumes the session
    under the packet ids the failed one reported (without a store), or gets them back from
    the store, so at QoS 2 every message arrives exactly once, and every token the
    application holds completes exactly once."""
    broker = mosquitto()
    store = tmp_path / "pub.flash" if with_store else None
    tokens, completed, received, pub, sub = flood_with_a_trap(broker, 2, 300, "pub", store, clean_init)
    assert pub.restarts == 1
    assert sorted(completed) == sorted(tokens), "every token completes, once"
    assert sorted(received, key=int) == [b"%d" % i for i in range(300)], "exactly once"
    pub.close()
    sub.close()


@pytest.mark.parametrize("clean_init", [False, True])
def test_a_trap_in_the_subscriber_loses_no_qos1_message(mosquitto, clean_init):
    """With `clean_init` true the fresh instance must not purge the session again: the
    broker would drop the messages it held for the subscriber."""
    broker = mosquitto()
    tokens, completed, received, pub, sub = flood_with_a_trap(broker, 1, 300, "sub", clean_init=clean_init)
    assert sub.restarts == 1
    assert sorted(completed) == sorted(tokens)
    assert set(received) == {b"%d" % i for i in range(300)}, "nothing lost (a resend may come twice)"
    pub.close()
    sub.close()


def test_a_trap_with_a_full_queue_and_a_subscription_loses_nothing(mosquitto):
    """The broker is down and the queue full when the instance traps: the fresh instance
    takes back every publish, with room for the answered subscription it is given again
    besides (that counts against `max_queued` there until answered), and once the broker
    is back each is delivered. Before, the replay's last publishes met `queue-full` and
    were reported failed."""
    broker = mosquitto()
    pub = Client("127.0.0.1", "py-full-trap", port=broker.port, max_inflight=2, max_queued=3)
    connected(pub)
    pub.subscribe("py/full/echo", 1)
    everything = run_until([pub], lambda ev: kinds(ev[pub], "subscribed"))
    broker.stop()
    run_until([pub], lambda ev: kinds(ev[pub], "down"), 10, everything)
    tokens = [pub.publish("py/full", b"%d" % i, 1) for i in range(3)]
    with pytest.raises(ClientError, match="queue-full"):
        pub.publish("py/full", b"x", 1)
    pub._live.starve_next = True
    run_until([pub], lambda ev: pub.restarts == 1, 10, everything)
    broker.start()
    got = run_until([pub], lambda ev: set(kinds(ev[pub], "published")) >= set(tokens), 30, everything)[pub]
    assert not kinds(got, "publish-failed"), got
    assert not [e for e in kinds(got, "error") if "replay after restart refused" in e], got
    # The broker was down when the fresh instance first tried: the host tried again.
    assert [e for e in kinds(got, "error") if "reconnect after restart failed" in e], got
    pub.close()


def test_a_second_trap_with_a_full_queue_loses_nothing_either(mosquitto):
    """The room a restart gives the fresh instance for the subscription it makes again is not
    the application's to fill: once that is answered the application still gets `max_queued`
    places, no more, so a second trap with the queue full hands everything back again.
    Before, the application could fill the spare place, and the second restart refused a
    publish it handed back."""
    broker = mosquitto()
    pub = Client("127.0.0.1", "py-full-trap-twice", port=broker.port, max_inflight=2, max_queued=3)
    connected(pub)
    pub.subscribe("py/full2/echo", 1)
    everything = run_until([pub], lambda ev: kinds(ev[pub], "subscribed"))
    pub._live.starve_next = True
    run_until([pub], lambda ev: pub.restarts == 1 and kinds(ev[pub], "up"), 10, everything)
    for _ in range(20):  # the subscription made again is answered (the application hears nothing)
        pub.poll(0.005)
    broker.stop()
    run_until([pub], lambda ev: len(kinds(ev[pub], "down")) == 2, 10, everything)
    tokens = [pub.publish("py/full2", b"%d" % i, 1) for i in range(3)]
    with pytest.raises(ClientError, match="queue-full"):
        pub.publish("py/full2", b"x", 1)
    with pytest.raises(ClientError, match="queue-full"):
        pub.subscribe("py/full2/other", 1)
    pub._live.starve_next = True
    run_until([pub], lambda ev: pub.restarts == 2, 10, everything)
    broker.start()
    got = run_until([pub], lambda ev: set(kinds(ev[pub], "published")) >= set(tokens), 30, everything)[pub]
    assert not kinds(got, "publish-failed"), got
    assert not [e for e in kinds(got, "error") if "replay after restart refused" in e], got
    pub.close()


def test_a_trap_inside_disconnect_still_closes_the_client(mosquitto):
    """The instance fails inside `disconnect`: the fresh one is closed too, so a later publish
    is refused `closed` and what was outstanding is reported failed. Before, the fresh instance
    was left open, taking publishes it would never send."""
    broker = mosquitto()
    client = Client("127.0.0.1", "py-trap-disconnect", port=broker.port)
    connected(client)
    client._live.starve_next = True
    client.disconnect()
    assert client.restarts == 1
    with pytest.raises(ClientError, match="closed"):
        client.publish("py/after", b"x", 1)
    client.close()


def test_after_a_restart_the_applications_own_connect_hears_that_it_failed(mosquitto):
    """With the broker down, a restart's fresh instance cannot connect: the host retries for
    the application, whose connect succeeded long before, and says so as an `error`. Once the
    application calls `connect` itself, the attempt is its own, and `connect-failed` answers
    it. Before, that failure too was taken for the host's and retried."""
    broker = mosquitto()
    client = Client("127.0.0.1", "py-own-connect", port=broker.port)
    connected(client)
    broker.stop()
    everything = run_until([client], lambda ev: kinds(ev[client], "down"), 10)
    client._live.starve_next = True
    run_until([client], lambda ev: [e for e in kinds(ev[client], "error") if "reconnect after restart failed" in e], 10, everything)
    assert client.restarts == 1
    client.connect()
    got = run_until([client], lambda ev: kinds(ev[client], "connect-failed"), 10)[client]
    assert not [e for e in kinds(got, "error") if "after restart" in e], got
    client.close()


def test_a_component_that_fails_every_time_ends_the_client_instead_of_restarting_for_ever(mosquitto, monkeypatch):
    """Every instance's `poll` traps (as a failure each one meets would): the client replaces
    the instance three times, then gives up and says so, rather than loop for ever."""
    from mqtt_component._instance import Instance

    broker = mosquitto()
    client = Client("127.0.0.1", "py-always-failing", port=broker.port)
    connected(client)
    method = Instance.method

    def starved_poll(live, name, *args):
        if name == "poll":
            live.starve_next = True
        return method(live, name, *args)

    monkeypatch.setattr(Instance, "method", starved_poll)
    with pytest.raises(ClientFailed, match="4 times in a row"):
        for _ in range(10):
            client.poll(0.1)  # each restart is reported (`down`, `error`) before the next
    assert client.restarts == 4
    with pytest.raises(ClientFailed):
        client.publish("t", b"x")
    client.close()


def test_a_closed_client_refuses_every_call_clearly(mosquitto):
    """After `close`, each call raises `ClientError` ("closed") and nothing starts again.
    Before, they met an AttributeError of the dropped instance."""
    broker = mosquitto()
    client = Client("127.0.0.1", "py-closed", port=broker.port)
    connected(client)
    client.close()
    for call in (lambda: client.publish("t", b"x"), lambda: client.subscribe("t"), client.poll, client.connect, client.stats):
        with pytest.raises(ClientError, match="closed"):
            call()
    assert client.restarts == 0


def test_polling_a_client_that_has_nothing_left_to_do_returns(mosquitto):
    """After `disconnect`, with no socket and no deadline, `poll()` without a timeout returns
    at once instead of waiting (or spinning) for ever."""
    broker = mosquitto()
    client = Client("127.0.0.1", "py-idle", port=broker.port)
    connected(client)
    client.disconnect()
    got = run_until([client], lambda ev: kinds(ev[client], "down"), 10)[client]
    assert kinds(got, "down") == ["requested"]
    started = time.monotonic()
    assert client.poll() == []
    assert time.monotonic() - started < 1
    client.close()


def test_a_slow_name_lookup_does_not_hold_up_poll(mosquitto, monkeypatch):
    """A broker given by name is looked up on a thread of the client's own: while DNS takes
    its time (made slow here, 1.5 s, around the real lookup of `localhost`), `poll` keeps
    returning on time, then the connection comes up. A name that does not resolve is a
    connect failure that says so."""
    import socket as socket_module

    broker = mosquitto()
    real = socket_module.getaddrinfo
    lookups = []

    def slow(host, *args, **kwargs):
        if host == "localhost":
            lookups.append(threading.current_thread().name)
            time.sleep(1.5)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket_module, "getaddrinfo", slow)
    client = Client("localhost", "py-slow-dns", port=broker.port)
    client.connect()
    longest, got, started = 0.0, [], time.monotonic()
    while not kinds(got, "up") and time.monotonic() - started < 10:
        t = time.monotonic()
        got += client.poll(0.05)
        longest = max(longest, time.monotonic() - t)
    assert kinds(got, "up"), f"no connection: {got}"
    assert time.monotonic() - started >= 1.5, "the lookup was slowed"
    assert longest < 0.5, f"a poll took {longest:.2f} s while the name was looked up"
    assert lookups and all(name.startswith("mqtt-resolver") for name in lookups)
    client.close()

    nowhere = Client("no-such-host.invalid", "py-no-dns", port=broker.port)
    nowhere.connect()
    failed = run_until([nowhere], lambda ev: kinds(ev[nowhere], "connect-failed"), 20)[nowhere]
    assert "dns" in kinds(failed, "connect-failed")[0].lower()
    nowhere.close()
