// The Node host against a real Mosquitto: the guarantees hold with the defaults, through an
// outage, over TLS, through a failure of the component; bad input is refused with the key
// named.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Client, ClientError, ClientFailed, ConfigError, StoreError } from '../src/index.js';
import { Mosquitto, freePort, sleep, tlsFiles } from './mosquitto.js';

// Every client and broker a test makes is closed after it, pass or fail: an open client keeps
// the process alive (its sockets and its deadline timer), as it should for an application.
const made = [];
afterEach(async () => {
  for (const m of made.splice(0)) await (m instanceof Mosquitto ? m.remove() : m.close());
});

async function client(id, settings) {
  const c = await Client.create('127.0.0.1', id, settings);
  made.push(c);
  return c;
}

async function broker(settings) {
  const m = await Mosquitto.start(settings);
  made.push(m);
  return m;
}

/// Resolves with the first `kind` event's value (rejects after `ms`).
function next(client, kind, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no \`${kind}\` within ${ms} ms`)), ms);
    client.once(kind, (v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

/// Resolves once `done()` holds (checked every few ms; rejects after `ms`).
async function until(done, what, ms = 30_000) {
  const end = Date.now() + ms;
  while (!done()) {
    if (Date.now() > end) throw new Error(`not done within ${ms} ms: ${what()}`);
    await sleep(5);
  }
}

async function connected(server, id, settings) {
  const c = await client(id, { port: server.port, ...settings });
  c.connect();
  await next(c, 'up');
  return c;
}

async function subscribed(client, filter, level) {
  const token = client.subscribe(filter, level);
  const answer = await next(client, 'subscribed');
  assert.deepEqual(answer, { token, codes: [level] }, 'granted as asked, under the token subscribe returned');
}

for (const level of [0, 1, 2]) {
  test(`a subscriber with the defaults loses nothing at full speed (QoS ${level})`, async () => {
    const server = await broker();
    {
      const count = 5000;
      const sub = await connected(server, `node-sub-${level}`);
      await subscribed(sub, 'node/flood', level);
      const got = [];
      sub.on('message', (m) => got.push(m.payload.readUInt32BE()));
      const pub = await connected(server, `node-pub-${level}`);
      let sent = 0;
      let done = 0;
      pub.on('published', () => (done += 1));
      // As many as the client takes (`max_queued` outstanding), as fast as it takes them.
      while (done < count) {
        while (sent < count && sent - done < 512) {
          const payload = Buffer.alloc(4);
          payload.writeUInt32BE(sent);
          pub.publish('node/flood', payload, { qos: level });
          sent += 1;
        }
        await sleep(1);
      }
      await until(() => got.length >= count, () => `received ${got.length} of ${count}`);
      assert.deepEqual(got, [...Array(count).keys()], 'every message, in order');
      assert.equal(sub.stats().discards, 0n);
    }
  });
}

/// A Mosquitto that keeps its sessions across a restart (SIGTERM saves them), and a
/// subscriber to `topic` at `level` whose session outlives its connections.
async function persistentSubscriber(id, topic, level = 1, cleanInit = false) {
  const server = await broker();
  server.settings = `persistence true\npersistence_location ${server.dir}/\n`;
  await server.stop();
  await server.start();
  const sub = await connected(server, id, { clean_init: cleanInit, clean: false });
  await subscribed(sub, topic, level);
  return { server, sub };
}

test('a broker outage loses no QoS 1 message', async () => {
  const { server, sub } = await persistentSubscriber('node-outage-sub', 'node/outage');
  const received = new Set();
  sub.on('message', (m) => received.add(m.payload.toString()));
  const pub = await connected(server, 'node-outage-pub');
  const completed = new Set();
  pub.on('published', (t) => completed.add(t));
  for (let i = 0; i < 50; i++) pub.publish('node/outage', `${i}`);
  await sleep(1);
  const down = Promise.all([next(pub, 'down'), next(sub, 'down')]);
  await server.stop('SIGTERM');
  await down;
  for (let i = 50; i < 100; i++) pub.publish('node/outage', `${i}`);
  await sleep(500);
  await server.start();
  await until(
    () => received.size === 100 && completed.size === 100,
    () => `received ${received.size}, completed ${completed.size}`,
  );
  assert.ok(pub.stats().reconnects >= 1n && sub.stats().reconnects >= 1n);
});

test('the will is sent when the connection breaks', async () => {
  const server = await broker();
  const watcher = await connected(server, 'node-will-watcher');
  await subscribed(watcher, 'node/will', 1);
  const dying = await connected(server, 'node-will-dying', { will: { topic: 'node/will', payload: 'gone', qos: 1 } });
  dying.close(); // the socket closes with no DISCONNECT: the broker must send the will
  const m = await next(watcher, 'message');
  assert.equal(m.topic, 'node/will');
  assert.equal(m.payload.toString(), 'gone');
});

test('TLS with a CA of our own, and a stranger refused', async () => {
  const files = tlsFiles(mkdtempSync(join(tmpdir(), 'node-tls-')));
  const server = await broker(`cafile ${files.ca}\ncertfile ${files.cert}\nkeyfile ${files.key}\n`);
  const tls = await connected(server, 'node-tls', { ssl: true, ssl_params: { server_name: 'localhost', ca_file: files.ca } });
  await subscribed(tls, 'node/tls', 1);
  tls.publish('node/tls', 'over tls');
  assert.equal((await next(tls, 'message')).payload.toString(), 'over tls');

  const other = tlsFiles(mkdtempSync(join(tmpdir(), 'node-tls-other-')));
  const stranger = await client('node-tls-stranger', { port: server.port, ssl: true, ssl_params: { server_name: 'localhost', ca_file: other.ca } });
  stranger.connect();
  assert.match(await next(stranger, 'connect-failed'), /tls/i);
});

test('nothing listening is a connect failure, not a hang', async () => {
  const refused = await client('node-refused', { port: await freePort() });
  refused.connect();
  assert.match(await next(refused, 'connect-failed'), /refused/);
});

test('a wrong config value is refused, naming the key', async () => {
  // Of the right type but unworkable: the component's own check names the key.
  await assert.rejects(Client.create('127.0.0.1', 'node-bad', { port: 0 }), (e) => e instanceof ClientError && e.kind === 'invalid' && /port/.test(e.message));
  await assert.rejects(Client.create('127.0.0.1', 'node-bad', { v5: true, receive_maximum: 0 }), /receive_maximum/);
  // Of the wrong type, or no key at all: refused here, before anything runs.
  await assert.rejects(Client.create('127.0.0.1', 'node-bad', { keepalive_s: 'thirty' }), (e) => e instanceof ConfigError && /keepalive_s/.test(e.message));
  await assert.rejects(Client.create('127.0.0.1', 'node-bad', { max_inflight: 70000 }), /max_inflight.*out of range/);
  await assert.rejects(Client.create('127.0.0.1', 'node-bad', { keep_alive: 30 }), /no such key/);
  await assert.rejects(Client.create('127.0.0.1', 'node-bad', { will: { topic: 't', payload: 'x', qos: 3 } }), /will/);
});

/// `count` publishes at `level` from one client to another, flat out; once a third of them
/// are acknowledged, the next import call of `trapIn`'s component throws, which ends that
/// instance. Both sessions outlive their connections: only then is delivery (and QoS 2
/// exactly once) promised across a new connection. With `cleanInit` (mqtt_as's usual choice)
/// they are purged at power-up and kept from then on: the fresh instance resumes them all
/// the same.
async function floodWithATrap(level, count, trapIn, store, cleanInit = false) {
  const { server, sub } = await persistentSubscriber(`node-trap-sub-${level}`, 'node/trap', level, cleanInit);
  const pub = await connected(server, `node-trap-pub-${level}`, { clean_init: cleanInit, clean: false, store });
  const tokens = [];
  const completed = [];
  const received = [];
  pub.on('published', (t) => completed.push(t));
  pub.on('publish-failed', (f) => assert.fail(`publish failed: ${f.code}`));
  sub.on('message', (m) => received.push(Number(m.payload.toString())));
  let trapped = false;
  const end = Date.now() + 60_000;
  while ((received.length < count || completed.length < count) && Date.now() < end) {
    while (tokens.length < count && tokens.length - completed.length < 100) tokens.push(pub.publish('node/trap', `${tokens.length}`, { qos: level }));
    if (!trapped && completed.length >= count / 3) {
      trapped = true;
      (trapIn === 'pub' ? pub : sub).failImport = { name: 'recv', times: 1 };
    }
    await sleep(1);
  }
  return { pub, sub, tokens, completed, received };
}

const sorted = (xs) => [...xs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

for (const cleanInit of [false, true]) {
  const session = cleanInit ? 'a session kept after power-up' : 'a session kept from the start';
  for (const withStore of [false, true]) {
    test(`a failure in the publisher loses nothing, and QoS 2 stays exactly once (${withStore ? 'with' : 'without'} a store, ${session})`, async () => {
      const store = withStore ? join(mkdtempSync(join(tmpdir(), 'node-trap-store-')), 'pub.flash') : undefined;
      const { pub, tokens, completed, received } = await floodWithATrap(2, 300, 'pub', store, cleanInit);
      assert.equal(pub.restarts, 1);
      assert.deepEqual(sorted(completed), sorted(tokens), 'every token completes, once');
      assert.deepEqual(sorted(received), [...Array(300).keys()], 'every message exactly once');
    });
  }

  test(`a failure in the subscriber loses no QoS 1 message (${session})`, async () => {
    const { sub, tokens, completed, received } = await floodWithATrap(1, 300, 'sub', undefined, cleanInit);
    assert.equal(sub.restarts, 1);
    assert.deepEqual(sorted(completed), sorted(tokens));
    assert.deepEqual([...new Set(received)].sort((a, b) => a - b), [...Array(300).keys()], 'nothing lost (a resend may come twice)');
  });
}

test('a failure with the broker down and the queue full loses nothing', async () => {
  // The fresh instance takes back every publish, with room for the answered subscription it
  // is given again besides (that counts against max_queued there until answered); its first
  // connection attempt meets the outage, and the host tries again. Before, the replay's last
  // publishes met queue-full and failed, and the client never connected again.
  const server = await broker();
  const pub = await connected(server, 'node-full-trap', { max_inflight: 2, max_queued: 3 });
  await subscribed(pub, 'node/full/echo', 1);
  const events = [];
  pub.on('event', (e) => events.push(e));
  const down = next(pub, 'down');
  await server.stop();
  await down;
  const tokens = [0, 1, 2].map((i) => pub.publish('node/full', `${i}`));
  assert.throws(() => pub.publish('node/full', 'x'), (e) => e instanceof ClientError && e.kind === 'queue-full');
  // Down, the client makes no read; its next attempt to connect opens a socket.
  pub.failImport = { name: 'open', times: 1 };
  await until(() => pub.restarts === 1, () => JSON.stringify(events));
  await server.start();
  const published = () => events.filter((e) => e.kind === 'published').map((e) => e.value);
  await until(() => tokens.every((t) => published().includes(t)), () => JSON.stringify(events.map((e) => e.kind)));
  assert.deepEqual(events.filter((e) => e.kind === 'publish-failed'), []);
  assert.deepEqual(events.filter((e) => e.kind === 'error' && /replay after restart refused/.test(e.value)), []);
  assert.ok(events.some((e) => e.kind === 'error' && /reconnect after restart failed/.test(e.value)), 'the host tried again');
});

test('a batch answers each publish and tracks every one taken', async () => {
  // One refused as invalid does not stop those after it, and every one taken completes under
  // the token it was given. Before, the answer stopped at the refusal, and those after it
  // were sent all the same, under tokens the application never had (and a restart would not
  // have handed them back).
  const server = await broker();
  const sub = await connected(server, 'node-batch-sub');
  await subscribed(sub, 'node/batch', 1);
  const received = [];
  sub.on('message', (m) => received.push(m.payload.toString()));
  const pub = await connected(server, 'node-batch-pub');
  const published = [];
  pub.on('published', (t) => published.push(t));
  const answers = pub.publishMany([
    ['node/batch', '1'],
    ['node/+', '2'],
    ['node/batch', '3'],
  ]);
  assert.ok(answers[1] instanceof ClientError && answers[1].kind === 'invalid', String(answers));
  assert.throws(() => pub.publish('node/+', '4'), (e) => e instanceof ClientError && e.kind === 'invalid');
  const tokens = [answers[0], answers[2], pub.publish('node/batch', '5')];
  assert.ok(tokens.every((t) => typeof t === 'bigint'), String(answers));
  await until(() => received.length === 3 && published.length === 3, () => JSON.stringify({ received, published: published.map(String) }));
  assert.deepEqual(received, ['1', '3', '5']);
  assert.deepEqual(published, tokens);
});

test('a second failure with the queue full loses nothing either', async () => {
  // The room a restart gives the fresh instance for the subscription it makes again is not
  // the application's to fill: once that is answered the application still gets maxQueued
  // places, no more, so a second failure with the queue full hands everything back again.
  // Before, the application could fill the spare place, and the second restart refused a
  // publish it handed back.
  const server = await broker();
  const pub = await connected(server, 'node-full-trap-twice', { max_inflight: 2, max_queued: 3 });
  await subscribed(pub, 'node/full2/echo', 1);
  const events = [];
  pub.on('event', (e) => events.push(e));
  const up = next(pub, 'up');
  pub.failImport = { name: 'recv', times: 1 };
  pub.publish('node/full2/warm', 'x', { qos: 0 }); // a poll follows, and fails
  await up;
  // The subscription made again is answered (the application hears nothing of it).
  await new Promise((resolve) => setTimeout(resolve, 300));
  const down = next(pub, 'down');
  await server.stop();
  await down;
  const tokens = [0, 1, 2].map((i) => pub.publish('node/full2', `${i}`));
  const full = (e) => e instanceof ClientError && e.kind === 'queue-full';
  assert.throws(() => pub.publish('node/full2', 'x'), full, 'maxQueued is 3, restarts or not');
  assert.throws(() => pub.subscribe('node/full2/other', 1), full, 'a subscription takes a place too');
  pub.failImport = { name: 'open', times: 1 };
  await until(() => pub.restarts === 2, () => JSON.stringify(events));
  await server.start();
  const published = () => events.filter((e) => e.kind === 'published').map((e) => e.value);
  await until(() => tokens.every((t) => published().includes(t)), () => JSON.stringify(events.map((e) => e.kind)));
  assert.deepEqual(events.filter((e) => e.kind === 'publish-failed'), []);
  assert.deepEqual(events.filter((e) => e.kind === 'error' && /replay after restart refused/.test(e.value)), []);
});

test('a failure inside disconnect still closes the client', async () => {
  // The fresh instance is closed too, so a later publish is refused (closed) and what was
  // outstanding is reported failed. Before, it was left open, taking publishes it would
  // never send.
  const server = await broker();
  const client = await connected(server, 'node-fail-disconnect');
  client.failImport = { name: 'recv', times: 1 };
  client.disconnect();
  assert.equal(client.restarts, 1);
  assert.throws(() => client.publish('node/after', 'x'), (e) => e instanceof ClientError && e.kind === 'closed');
});

test("after a restart the application's own connect hears that it failed", async () => {
  // With the broker down, a restart's fresh instance cannot connect: the host retries for the
  // application, whose connect succeeded long before, and says so as an error. Once the
  // application calls connect itself, the attempt is its own, and connect-failed answers it.
  // Before, that failure too was taken for the host's and retried.
  const server = await broker();
  const client = await connected(server, 'node-own-connect');
  const events = [];
  client.on('event', (e) => events.push(e));
  const down = next(client, 'down');
  await server.stop();
  await down;
  client.failImport = { name: 'open', times: 1 };
  const retried = () => events.some((e) => e.kind === 'error' && /reconnect after restart failed/.test(e.value));
  await until(retried, () => JSON.stringify(events));
  assert.equal(client.restarts, 1);
  const from = events.length;
  const failed = next(client, 'connect-failed');
  client.connect();
  await failed;
  assert.deepEqual(events.slice(from).filter((e) => e.kind === 'error' && /after restart/.test(e.value)), []);
});

test('a closed client refuses every call clearly', async () => {
  // After close(), each call throws ClientError ("closed") and nothing starts again. Before,
  // the error a call met in the dropped instance was taken for a failure of it, and the
  // "restart" made a fresh instance, which took the publish and opened a connection.
  const server = await broker();
  const client = await connected(server, 'node-closed');
  client.close();
  const closed = (e) => e instanceof ClientError && e.kind === 'closed';
  for (const call of [() => client.publish('t', 'x'), () => client.subscribe('t'), () => client.connect(), () => client.stats()]) {
    assert.throws(call, closed);
  }
  assert.equal(client.restarts, 0);
});

test('a component that fails every time ends the client instead of restarting for ever', async () => {
  const server = await broker();
  const failing = await connected(server, 'node-always-failing');
  const failed = next(failing, 'failed');
  failing.failImport = { name: 'recv', times: Infinity };
  failing.publish('t', 'x'); // a poll follows, and fails; so does every replacement's
  assert.match((await failed).message, /4 times in a row/);
  assert.equal(failing.restarts, 4);
  assert.throws(() => failing.publish('t', 'x'), ClientFailed);
});

test('a store keeps what a killed process accepted', async () => {
  // A process accepts 20 QoS 1 publishes while the broker is down and is killed (SIGKILL: no
  // chance to save anything then); the next client on its store file sends them all.
  const { server, sub } = await persistentSubscriber('node-stored-sub', 'node/stored');
  const received = new Set();
  sub.on('message', (m) => received.add(m.payload.toString()));
  await server.stop('SIGTERM');
  const store = join(mkdtempSync(join(tmpdir(), 'node-store-')), 'client.flash');
  const index = fileURLToPath(new URL('../src/index.js', import.meta.url));
  const script = `
    import { Client } from ${JSON.stringify(index)};
    const c = await Client.create('127.0.0.1', 'node-stored', { port: ${server.port}, store: ${JSON.stringify(store)} });
    c.on('connect-failed', () => {});
    c.connect();
    for (let i = 0; i < 20; i++) c.publish('node/stored', String(i));
    console.log('accepted 20');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const said = await new Promise((resolve) => child.stdout.once('data', (d) => resolve(String(d).trim())));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.equal(said, 'accepted 20');

  await server.start();
  const again = await client('node-stored', { port: server.port, store });
  const completed = new Set();
  again.on('published', (t) => completed.add(t));
  again.connect();
  await until(
    () => received.size === 20 && completed.size === 20,
    () => `received ${received.size}, completed ${completed.size}`,
  );
});

test('a file that is not a store is refused and left alone; one store serves one client', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'node-store-files-'));
  const notes = join(dir, 'notes.txt');
  writeFileSync(notes, 'my notes, not a flash image\n');
  await assert.rejects(Client.create('127.0.0.1', 'node-wrong-file', { store: notes }), (e) => e instanceof StoreError && /not a store file/.test(e.message));
  assert.equal(readFileSync(notes, 'utf8'), 'my notes, not a flash image\n');

  const store = join(dir, 'one.flash');
  const first = await client('node-first', { store });
  await assert.rejects(Client.create('127.0.0.1', 'node-second', { store }), /in use/);
  first.close();
  (await client('node-second', { store })).close();
});

// The Python host's store, run in a process of its own: opens the store at argv[2] and says
// so, or says why not; closes it when its stdin ends.
const PYTHON_HOLDS_A_STORE = `
import importlib.util, sys
spec = importlib.util.spec_from_file_location("store", sys.argv[1])
store = importlib.util.module_from_spec(spec)
spec.loader.exec_module(store)
try:
    flash = store.FileFlash(sys.argv[2])
except store.StoreError as e:
    print("refused", e, flush=True)
    sys.exit(0)
print("open", flush=True)
sys.stdin.read()
flash.close()
`;

function pythonOpens(store) {
  const storePy = fileURLToPath(new URL('../../python/mqtt_component/_store.py', import.meta.url));
  const child = spawn('python3', ['-c', PYTHON_HOLDS_A_STORE, storePy, store], { stdio: ['pipe', 'pipe', 'inherit'] });
  const said = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.trim());
    });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`python exited (${code}) before it said anything`)));
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return { child, said, exited };
}

test('no two hosts share a store: a Python client and a Node client keep off each other\'s', async () => {
  const store = join(mkdtempSync(join(tmpdir(), 'node-store-hosts-')), 'shared.flash');
  // Python has it: refused here, the reason naming the process and its host.
  const python = pythonOpens(store);
  assert.equal(await python.said, 'open');
  await assert.rejects(
    Client.create('127.0.0.1', 'node-shared', { store }),
    (e) => e instanceof StoreError && new RegExp(`process ${python.child.pid}, the python host`).test(e.message),
  );
  // Killed, it leaves its lock file behind; its process is gone, so the file is taken over.
  python.child.kill('SIGKILL');
  await python.exited;
  assert.equal(readFileSync(`${store}.lock`, 'utf8'), `${python.child.pid} python\n`);
  const node = await client('node-shared', { store });
  assert.equal(readFileSync(`${store}.lock`, 'utf8'), `${process.pid} node\n`);
  // Node has it: the Python host refuses it.
  const second = pythonOpens(store);
  assert.match(await second.said, new RegExp(`^refused .*in use by another client \\(process ${process.pid}, the node host`));
  await second.exited;
  node.close();
});

test('a store whose lock file is a link to nowhere is refused, not tried for ever', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'node-store-link-'));
  const store = join(dir, 'linked.flash');
  symlinkSync(join(dir, 'nowhere'), `${store}.lock`);
  await assert.rejects(
    Client.create('127.0.0.1', 'node-linked', { store }),
    (e) => e instanceof StoreError && /another client is taking this store at the same moment/.test(e.message),
  );
});
