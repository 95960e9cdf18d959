#!/usr/bin/env bash
# User-mode instructions per message, this client against rumqttc, counted by valgrind's
# callgrind: a figure that does not move with a noisy machine the way CPU seconds do, for
# comparing two builds or two clients when `mqtt-bench`'s timings are within the noise.
#
#   cargo build --release -p mqtt-bench && bench/instructions.sh [QOS] [COUNT]
#
# Each peer (the same `mqtt-bench peer` the benchmark runs: one publisher and one subscriber
# in one process, window 100, TCP_NODELAY) runs under callgrind twice, with COUNT and 2 x COUNT
# messages, against a Mosquitto with mqtt-bench's settings; the difference over COUNT is the
# cost of a message with start-up (and, under valgrind, the component compiled at load:
# valgrind's CPU lacks features the precompiled code was built for) taken out. Kernel time
# is not counted. Under valgrind everything runs ~50x slower, so each `poll` finds fewer
# messages than at full speed: costs per call weigh more than they do in real runs.
#
# To see where the instructions go, per guest function too: build the component with names
# (profile `wasm`: strip = false, and no wasm-opt in host/build.rs), run a peer with
# MQTT_HOST_PERFMAP=1 under `valgrind --tool=callgrind`, and map callgrind's JIT addresses
# through /tmp/perf-PID.map.
set -euo pipefail
cd "$(dirname "$0")/.."

QOS=${1:-1}
COUNT=${2:-20000}
BENCH=target/release/mqtt-bench
for tool in valgrind mosquitto; do
    command -v "$tool" >/dev/null || { echo "needs $tool (Debian: apt-get install $tool)" >&2; exit 1; }
done
[ -x "$BENCH" ] || { echo "build it first: cargo build --release -p mqtt-bench" >&2; exit 1; }

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# mqtt-bench's broker settings (bench/src/broker.rs).
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 100\nset_tcp_nodelay true\n' "$port" >"$work/m.conf"
mosquitto -c "$work/m.conf" >"$work/mosquitto.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.5

instructions() { # client count -> total instructions of the run
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" --smc-check=all-non-file \
        "$BENCH" peer --client "$1" --port "$port" --qos "$QOS" --count "$2" --window 100 >/dev/null 2>"$work/vg.log" \
        || { cat "$work/vg.log" >&2; exit 1; }
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' "$work/vg.log"
}

echo "QoS $QOS, instructions per message (callgrind, marginal over $COUNT messages)"
for client in ours rumqttc; do
    one=$(instructions "$client" "$COUNT")
    two=$(instructions "$client" $((COUNT * 2)))
    echo "$client $(( (two - one) / COUNT ))"
done
