"""paho-mqtt peer for mqtt-bench: one publisher and one subscriber in this process, the same
measurement as the Rust peers (bench/src/peers.rs). Prints one JSON line.

usage: paho_peer.py PORT QOS COUNT WINDOW
"""

import json
import resource
import struct
import sys
import threading
import time

import paho.mqtt.client as mqtt

PAYLOAD = 100
IDLE_LIMIT = 5.0


def main():
    port, qos, count, window = (int(a) for a in sys.argv[1:5])
    topic = "bench/paho/%d" % id(main)
    latencies = []
    arrivals = {"first": None, "last": None}
    all_received = threading.Event()
    subscribed = threading.Event()

    def on_message(_c, _u, msg):
        now = time.monotonic_ns()
        sent = struct.unpack_from("<Q", msg.payload)[0]
        latencies.append((now - sent) / 1000.0)
        if arrivals["first"] is None:
            arrivals["first"] = now
        arrivals["last"] = now
        if len(latencies) >= count:
            all_received.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho-sub")
    sub.max_inflight_messages_set(window)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", port, keepalive=60)
    sub.loop_start()
    sub.subscribe(topic, qos)
    subscribed.wait(10)

    completed = [0]
    all_completed = threading.Event()
    # `window` in flight and as many waiting in the client, as rumqttc's in-flight window and
    # request channel hold them (bench/src/peers.rs, `outstanding`).
    window_free = threading.Semaphore(2 * window)

    def on_publish(_c, _u, _mid, _rc, _props):
        window_free.release()
        completed[0] += 1
        if completed[0] >= count:
            all_completed.set()

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho-pub")
    pub.max_inflight_messages_set(window)
    pub.max_queued_messages_set(0)
    pub.on_publish = on_publish
    pub.connect("127.0.0.1", port, keepalive=60)
    pub.loop_start()

    start = time.monotonic_ns()
    for _ in range(count):
        window_free.acquire()
        payload = struct.pack("<Q", time.monotonic_ns()) + b"." * (PAYLOAD - 8)
        pub.publish(topic, payload, qos)
    all_completed.wait()
    pub_elapsed = (time.monotonic_ns() - start) / 1e9

    # Wait for the subscriber, giving up after IDLE_LIMIT without progress (QoS 0 may drop).
    seen = -1
    while not all_received.is_set() and len(latencies) != seen:
        seen = len(latencies)
        all_received.wait(IDLE_LIMIT)
    pub.disconnect()
    sub.disconnect()
    pub.loop_stop()
    sub.loop_stop()

    latencies.sort()
    n = len(latencies)

    def pct(p):
        return latencies[min(int(n * p), n - 1)] if n else 0.0

    # 0 stands for "no figure" (JSON has no NaN).
    span = (arrivals["last"] - arrivals["first"]) / 1e9 if n > 1 else 0.0
    print(json.dumps({
        "client": "paho-mqtt 2.1 (Python %d.%d)" % sys.version_info[:2],
        "qos": qos,
        "sent": count,
        "pub_rate": count / pub_elapsed,
        "received": n,
        "sub_rate": n / span if span > 0 else 0.0,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "cpu_us_per_msg": (lambda r: (r.ru_utime + r.ru_stime) * 1e6 / max(count, 1))(resource.getrusage(resource.RUSAGE_SELF)),
    }))


if __name__ == "__main__":
    main()
