// Messages per second through a local Mosquitto: this host's client against MQTT.js, side by
// side in one run, each with one publisher and one subscriber in this process, QoS 1,
// 100-byte payloads, 100 publishes outstanding, TCP_NODELAY on both (MQTT.js sets it too).
// MQTT.js has no in-flight limit of its own, so this client's `max_inflight` is the window too
// (its default, 16, would compare a window of 16 with one of 100).
//
//   npm install --no-save mqtt@5
//   printf 'listener 1883\nallow_anonymous true\n' | cat - ../../bench/mosquitto.conf > /tmp/bench-mosquitto.conf
//   mosquitto -c /tmp/bench-mosquitto.conf &
//   node bench.mjs --port 1883 --count 20000 --rounds 5
//
// The broker is set as mqtt-bench's (bench/mosquitto.conf): with Mosquitto's defaults it keeps
// 20 messages in flight to a subscriber and drops QoS 1 messages queued past 1,000.

import { parseArgs } from 'node:util';
import { Client } from './src/index.js';

const { values: a } = parseArgs({
  options: { port: { type: 'string', default: '1883' }, count: { type: 'string', default: '20000' }, window: { type: 'string', default: '100' }, rounds: { type: 'string', default: '3' } },
});
const [port, count, window, rounds] = [a.port, a.count, a.window, a.rounds].map(Number);
const PAYLOAD = Buffer.alloc(100, '.');
const once = (emitter, kind) => new Promise((r) => emitter.once(kind, r));

/// Publishes `count` messages with `publish(done)` (which calls `done` at the PUBACK), keeping
/// `window` outstanding, until the subscriber (`onMessage`) has them all; messages a second.
async function flood(onMessage, publish) {
  let received = 0;
  let done = 0;
  let sent = 0;
  const finished = new Promise((resolve) => onMessage(() => ++received === count && resolve()));
  const start = performance.now();
  const refill = () => {
    while (sent < count && sent - done < window) {
      sent += 1;
      publish(() => {
        done += 1;
        refill();
      });
    }
  };
  refill();
  await finished;
  return count / ((performance.now() - start) / 1000);
}

async function ours() {
  const sub = await Client.create('127.0.0.1', 'bench-node-sub', { port, max_inflight: window });
  const pub = await Client.create('127.0.0.1', 'bench-node-pub', { port, max_inflight: window });
  for (const c of [sub, pub]) {
    c.connect();
    await once(c, 'up');
  }
  sub.subscribe('bench/node/ours', 1);
  await once(sub, 'subscribed');
  // QoS 1 completes in order: each `published` answers the oldest publish.
  const waiting = [];
  pub.on('published', () => waiting.shift()());
  const rate = await flood(
    (f) => sub.on('message', f),
    (done) => {
      waiting.push(done);
      pub.publish('bench/node/ours', PAYLOAD, { qos: 1 });
    },
  );
  pub.close();
  sub.close();
  return rate;
}

async function mqttjs() {
  const mqtt = await import('mqtt');
  const opts = { port, protocolVersion: 4, clean: true };
  const sub = await mqtt.connectAsync('mqtt://127.0.0.1', { ...opts, clientId: 'bench-mqttjs-sub' });
  const pub = await mqtt.connectAsync('mqtt://127.0.0.1', { ...opts, clientId: 'bench-mqttjs-pub' });
  await sub.subscribeAsync('bench/node/mqttjs', { qos: 1 });
  const rate = await flood(
    (f) => sub.on('message', f),
    (done) => pub.publish('bench/node/mqttjs', PAYLOAD, { qos: 1 }, done),
  );
  await Promise.all([pub.endAsync(), sub.endAsync()]);
  return rate;
}

const rows = { 'this client (jco)': ours };
try {
  await import('mqtt');
  rows['MQTT.js 5'] = mqttjs;
} catch {
  console.error('mqtt (MQTT.js) is not installed: measuring this client only');
}
const results = Object.fromEntries(Object.keys(rows).map((k) => [k, []]));
for (let r = 0; r < rounds; r++) for (const [name, run] of Object.entries(rows)) results[name].push(await run());
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
for (const [name, rates] of Object.entries(results)) {
  console.log(`${name}: median ${Math.round(median(rates)).toLocaleString('en')} msg/s end to end (rounds: ${rates.map((r) => Math.round(r).toLocaleString('en')).join(', ')})`);
}
