"""Messages per second through a local Mosquitto: this host's client against paho-mqtt, side
by side in one run, each with one publisher and one subscriber in this process, QoS 1,
100-byte payloads, 100 publishes outstanding, TCP_NODELAY on both, and the same window on
both: paho's `max_inflight_messages` and this client's `max_inflight` are set to it (this
client's default is 16, paho's 20).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -r requirements-test.txt paho-mqtt==2.1.0
    printf 'listener 1883\nallow_anonymous true\n' | cat - ../../bench/mosquitto.conf > /tmp/bench-mosquitto.conf
    mosquitto -c /tmp/bench-mosquitto.conf &
    /tmp/venv/bin/python bench.py --port 1883 --count 5000 --rounds 5

The broker is set as `mqtt-bench`'s (bench/mosquitto.conf): with Mosquitto's defaults it drops
QoS 1 messages queued for a subscriber past 1,000, and paho's falls that far behind.
"""

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PAYLOAD = b"." * 100


def run_ours(port: int, count: int, window: int) -> float:
    from mqtt_component import Client

    sub = Client("127.0.0.1", "bench-py-sub", port=port, max_inflight=window)
    pub = Client("127.0.0.1", "bench-py-pub", port=port, max_inflight=window)
    for c in (sub, pub):
        c.connect()
        while not any(e.kind == "up" for e in c.poll(5)):
            pass
    sub.subscribe("bench/py/ours", 1)
    while not any(e.kind == "subscribed" for e in sub.poll(5)):
        pass
    received = 0

    def take():
        nonlocal received
        while received < count:
            received += sum(1 for e in sub.poll(1) if e.kind == "message")

    t = threading.Thread(target=take)
    t.start()
    start = time.perf_counter()
    sent = done = 0
    while done < count:
        n = min(count - sent, window - (sent - done))
        if n > 0:
            pub.publish_many([("bench/py/ours", PAYLOAD, 1, False)] * n)
            sent += n
        done += sum(1 for e in pub.poll(1) if e.kind == "published")
    t.join()
    elapsed = time.perf_counter() - start
    pub.close()
    sub.close()
    return count / elapsed


def run_paho(port: int, count: int, window: int) -> float:
    import paho.mqtt.client as mqtt

    received = threading.Semaphore(0)
    outstanding = threading.Semaphore(window)
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho-sub")
    sub.on_message = lambda c, u, m: received.release()
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho-pub")
    pub.max_inflight_messages_set(window)
    # QoS 1: called at the PUBACK, which frees a place in the window.
    pub.on_publish = lambda *a: outstanding.release()
    for c in (sub, pub):
        c.connect("127.0.0.1", port)
        c.socket().setsockopt(__import__("socket").IPPROTO_TCP, __import__("socket").TCP_NODELAY, 1)
        c.loop_start()
    sub.subscribe("bench/py/paho", 1)
    subscribed.wait(5)
    start = time.perf_counter()
    for _ in range(count):
        outstanding.acquire()
        pub.publish("bench/py/paho", PAYLOAD, 1)
    got = 0
    while got < count and received.acquire(timeout=5):
        got += 1
    elapsed = time.perf_counter() - start
    if got < count:
        print(f"paho-mqtt: {count - got} of {count} messages never arrived (5 s without one)", file=sys.stderr)
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()
    return count / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rows = {"this client (wasmtime-py)": run_ours}
    try:
        __import__("paho.mqtt.client")
        rows["paho-mqtt"] = run_paho
    except ImportError:
        print("paho-mqtt is not installed: measuring this client only", file=sys.stderr)
    results = {name: [] for name in rows}
    for _ in range(a.rounds):
        for name, run in rows.items():
            results[name].append(run(a.port, a.count, a.window))
    for name, rates in results.items():
        print(f"{name}: median {statistics.median(rates):,.0f} msg/s end to end (rounds: {', '.join(f'{r:,.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
