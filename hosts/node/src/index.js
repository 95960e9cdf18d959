// `Client`: the component on Node's event loop.
//
// The component never blocks and never waits: `poll` hands it the clock, it does what is due
// (read, acknowledge, republish, ping, reconnect) and returns its events and when it wants to
// be polled again. This class polls it whenever a socket moves, a request is made, or that
// deadline comes, and emits the events. Requests (`publish`, `subscribe`, ...) are queued at
// once and go out on the next poll, within the same turn of the event loop's queue.
//
// If the instance fails (a trap, or an exception thrown across it), it is replaced as the
// Rust host's `Device` and the Python host replace it: a fresh instance gets the same config,
// resumes the session under the packet ids the failed one reported, subscribes again, is
// handed every publish accepted and not yet completed (with room in its queue for the
// subscriptions besides), and then connects if it was asked to (trying again while that
// fails), so nothing accepted is lost. The application keeps its tokens: they are this class's.

import { EventEmitter } from 'node:events';
import { readFile, readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import { QOS_NAMES, buildConfig, ConfigError } from './config.js';
import { Sockets, allowedBrokers, imports } from './platform.js';
import { FileFlash, StoreError } from './store.js';

export { ConfigError, StoreError };

// A token whose publish is kept in the store: it names the store's record, so it is the same
// in every instance (the core's `STORED_TOKEN`).
const STORED_TOKEN = 1n << 63n;
/// Restarts without a poll going through in between before the client gives up.
const MAX_RESTARTS_IN_A_ROW = 3;

/// A request the client refused at once: `kind` is `invalid`, `queue-full`, `closed`,
/// `store-full` or `storage`.
export class ClientError extends Error {
  constructor(kind, detail) {
    super(detail ? `${kind}: ${detail}` : kind);
    this.name = 'ClientError';
    this.kind = kind;
    this.detail = detail;
  }
}

/// The component failed and could not be replaced (its replacement failed too).
export class ClientFailed extends Error {
  constructor(why) {
    super(why);
    this.name = 'ClientFailed';
  }
}

const now = () => BigInt(Math.floor(performance.now()));
/// The `client-error` a method of the instance refused with, or null (a trap). jco throws a
/// method's `err` wrapped in an `Error` with it as `payload` (the version `build.mjs` pins),
/// or as it is (later ones).
function refusal(e) {
  const isError = (v) => v !== null && typeof v === 'object' && !(v instanceof Error) && typeof v.tag === 'string';
  if (isError(e)) return e;
  return e instanceof Error && isError(e.payload) ? e.payload : null;
}

/// The transpiled component (`npm run build` makes it), its core modules compiled once per
/// process, so that an instance is made synchronously (a replacement is made inside the call
/// that found its predecessor failed).
let transpiled;
async function component() {
  if (!transpiled) {
    const gen = new URL('../gen/', import.meta.url);
    const { instantiate } = await import(new URL('mqtt_client.js', gen)).catch((e) => {
      throw new Error(`the transpiled component is missing: run \`npm run build\` in ${fileURLToPath(new URL('..', gen))} (${e.message})`);
    });
    const modules = new Map();
    for (const name of await readdir(gen)) {
      if (name.endsWith('.wasm')) modules.set(name, await WebAssembly.compile(await readFile(new URL(name, gen))));
    }
    transpiled = (table) =>
      instantiate(
        (path) => modules.get(path),
        table,
        (module, imports) => new WebAssembly.Instance(module, imports),
      );
  }
  return transpiled;
}

function downReason(r) {
  return r.val === undefined ? r.tag : `${r.tag}: ${r.val}`;
}

/// The instance's event as `{ kind, value }`.
function event(raw) {
  const { tag, val } = raw;
  switch (tag) {
    case 'message':
      return {
        kind: 'message',
        value: {
          topic: val.topic,
          payload: Buffer.from(val.payload),
          qos: QOS_NAMES.indexOf(val.qos),
          retained: val.retained,
          dup: val.dup,
          properties: val.properties,
        },
      };
    case 'down':
      return { kind: 'down', value: downReason(val) };
    case 'publish-failed':
      return { kind: tag, value: { token: val[0], code: val[1] } };
    case 'subscribed':
    case 'unsubscribed':
      return { kind: tag, value: { token: val[0], codes: [...val[1]] } };
    case 'auth':
      return { kind: tag, value: { code: val[0], data: Buffer.from(val[1]) } };
    default:
      return { kind: tag, value: val };
  }
}

function qos(level) {
  if (![0, 1, 2].includes(level)) throw new RangeError(`qos ${level}: must be 0, 1 or 2`);
  return QOS_NAMES[level];
}

/// A resilient MQTT client: the component, with this process's sockets and clock.
///
/// `await Client.create('broker.local', 'sensor-1', { keepalive_s: 30, clean: false })` takes
/// every config key the other hosts take (by the name a settings file gives it, its field
/// name, or that in camelCase), plus `will: { topic, payload, qos, retain }` and
/// `ssl_params: { server_name, ca_file, ... }`. Defaults are the core's: nothing the client
/// acknowledged is ever dropped (`backpressure`), 1883 (8883 with `ssl`). `store: 'file'`
/// keeps what was accepted and not yet acknowledged in that file (the other hosts' store
/// format), so a process that dies loses none of it: the next client on the file sends it.
///
/// Events: `message` ({ topic, payload, qos, retained, dup }), `up` (session present),
/// `down` (why), `published` (token), `publish-failed` ({ token, code }), `subscribed` and
/// `unsubscribed` ({ token, codes }), `connect-failed`, `broker-up`, `link`, `discarded`,
/// `auth`, `error` (text; logged as a warning when nothing listens), and `event` for every
/// one of them as { kind, value }.
export class Client extends EventEmitter {
  #config;
  #sockets;
  #instantiate;
  #flash;
  #live = null;
  #failed = null;
  #closed = false;
  #scheduled = false;
  #timer = null;
  #maxMessages;
  #ids = { reported: [], broker: null };
  // The application's tokens, and what they stand for until completed.
  #nextToken = 1n;
  #toHost = new Map(); // guest token -> ours (null: not the application's)
  #unacked = new Map(); // token -> the `publish` record, in order
  #packetIds = new Map(); // token -> { packetId, released }
  #requests = new Map(); // token -> ['subscribe' | 'unsubscribe', arg]
  #subscribed = []; // answered subscriptions, to make again
  #sessionBroker = 0;
  #connectRequested = false;
  // After a restart, a failed first attempt of the fresh instance is an outage like any
  // other (the application's connect succeeded before), retried for it until `up` or until
  // the application calls `connect` or `disconnect` itself: whether that holds, and the
  // timer that tries again.
  #restarted = false;
  #retryTimer = null;
  #reportedUp = false;
  #everUp = false; // some instance was up: the power-up purge is behind the client
  #failing = 0; // restarts since a poll last went through
  #backlog = [];
  #waiting = new Map(); // token -> { resolve, reject } of publishAsync
  /// How many times the instance was replaced.
  restarts = 0;
  /// Test hook: `{ name, times }` makes the next `times` calls of the import `name` throw, as
  /// a failing host function would (`times: Infinity`: every one).
  failImport = null;

  static async create(server, clientId, { store, ...settings } = {}) {
    const client = new Client(buildConfig(server, clientId, settings));
    client.#instantiate = await component();
    if (store !== undefined) client.#flash = new FileFlash(store, (level, message) => client.#log(level, message));
    try {
      client.#live = client.#freshInstance();
    } catch (e) {
      client.close(); // the store's lock must not outlive a client that never ran
      throw e;
    }
    return client;
  }

  constructor(config) {
    super();
    this.#config = config;
    this.#maxMessages = config.queueLen;
    const allowed = allowedBrokers(config.server, config.port, config.ssl, config.servers);
    this.#sockets = new Sockets(allowed, () => this.#schedule(), (level, message) => this.#log(level, message));
  }

  #log(level, message) {
    if (level === 'warn' || level === 'error') console.warn(`mqtt-component [${this.#config.clientId}]: ${message}`);
    else if (process.env.MQTT_COMPONENT_DEBUG) console.debug(`mqtt-component [${this.#config.clientId}] ${level}: ${message}`);
  }

  /// `room`: places in its queue beyond the config's `maxQueued` (see `#restart`). `wasUp`: an
  /// instance of this client was up once, so the power-up purge (`cleanInit`) is behind it:
  /// on a session kept after it (`clean` false) the fresh instance resumes the session
  /// instead of purging it again, and with it what the broker held for the client (as the
  /// Rust host does; see its `Device::replay_config`). Not with an empty client id: the fresh
  /// instance does not know the id the broker assigned.
  #freshInstance(room = 0, wasUp = false) {
    let config = room ? { ...this.#config, maxQueued: this.#config.maxQueued + room } : this.#config;
    if (wasUp && !config.clean && config.clientId !== '') config = { ...config, cleanInit: false };
    const ids = {
      sent: (publishes) => this.#ids.reported.push(...publishes),
      session: (broker) => (this.#ids.broker = broker),
    };
    const table = imports({ sockets: this.#sockets, ids, log: (level, message) => this.#log(level, message), flash: this.#flash });
    // The test hook: every import checks it.
    for (const iface of Object.values(table)) {
      for (const [name, f] of Object.entries(iface)) {
        iface[name] = (...args) => {
          const fail = this.failImport;
          if (fail?.name === name && fail.times > 0) {
            fail.times -= 1;
            throw new Error(`injected failure in the \`${name}\` import`);
          }
          return f(...args);
        };
      }
    }
    const root = this.#instantiate(table);
    try {
      return { root, client: root.client.Client.create(config) };
    } catch (e) {
      const refused = refusal(e);
      if (refused) throw new ClientError(refused.tag, refused.val);
      throw e;
    }
  }

  // -- calls into the instance, and its replacement ---------------------------------------

  /// A method of the instance. If the instance fails, it is replaced (synchronously: its
  /// modules are compiled already) and `undefined` is returned: the call is not made again.
  #call(name, ...args) {
    this.#usable();
    try {
      return this.#live.client[name](...args);
    } catch (e) {
      const refused = refusal(e);
      if (refused) throw new ClientError(refused.tag, refused.val);
      this.#restart(e);
      return undefined;
    }
  }

  /// Throws when no call can be made: the client failed for good, or was closed (not a
  /// failure of the instance, which `close` dropped: before, the error a call met was taken
  /// for one, and the "restart" brought a closed client back to life).
  #usable() {
    if (this.#failed) throw new ClientFailed(this.#failed);
    if (this.#closed) throw new ClientError('closed', 'close() was called');
  }

  /// Replaces the failed instance; a failure while doing it ends the client, and so does a
  /// fresh instance failing again before a poll of it went through (a failure that every
  /// instance meets would otherwise restart them for ever).
  #restart(why) {
    this.#takeIds();
    this.#sockets.closeAll();
    this.restarts += 1;
    this.#restarted = true;
    this.#failing += 1;
    if (this.#failing > MAX_RESTARTS_IN_A_ROW) {
      this.#failed = `the component failed ${this.#failing} times in a row, the last: ${why.message ?? why}`;
      throw new ClientFailed(this.#failed);
    }
    try {
      // The answered subscriptions it is given again count against `maxQueued` in the fresh
      // instance until answered (they did not in the failed one): without room for them, a
      // full queue lost its last publishes to `queue-full` here.
      this.#live = this.#freshInstance(this.#subscribed.length, this.#everUp);
      if (this.#reportedUp) {
        this.#reportedUp = false;
        this.#backlog.push({ kind: 'down', value: 'socket: closed' });
      }
      this.#backlog.push({ kind: 'error', value: `component restarted after a failure: ${why.message ?? why}` });
      const oldToHost = this.#toHost;
      this.#toHost = new Map();
      const live = this.#live.client;
      // What the store gave back keeps its token and is not handed over again (that would
      // send it twice). Asked first: once connected, any call may complete some of them.
      const stored = new Set();
      for (const guest of oldToHost.keys()) {
        if (guest & STORED_TOKEN && live.stored(guest)) {
          this.#toHost.set(guest, guest);
          stored.add(guest);
        }
      }
      const resumed = this.#resumeInFlight(live);
      for (const subs of this.#subscribed) this.#toHost.set(live.subscribe(subs, undefined), null);
      for (const [token, [kind, arg]] of this.#requests) {
        this.#toHost.set(kind === 'subscribe' ? live.subscribe(arg, undefined) : live.unsubscribe(arg), token);
      }
      const rest = [...this.#unacked].filter(([t]) => !resumed.has(t) && !stored.has(t));
      if (rest.length) live.publish(now(), rest.map(([, p]) => p)).forEach((r, i) => this.#replayed(rest[i][0], r));
      // Last: before it connects nothing handed over is answered, and there is no `up` yet,
      // which would count against `maxQueued` until a poll handed it over.
      if (this.#connectRequested) live.connect();
    } catch (e) {
      this.#failed = `the component failed (${why.message ?? why}) and its replacement failed too: ${e.message ?? JSON.stringify(e)}`;
      throw new ClientFailed(this.#failed);
    }
  }

  #resumeInFlight(live) {
    const inFlight = [...this.#unacked].filter(([t]) => this.#packetIds.has(t));
    if (!inFlight.length && this.#sessionBroker === 0) return new Set();
    live.resume(
      this.#sessionBroker,
      inFlight.map(([t]) => ({ token: 0n, packetId: this.#packetIds.get(t).packetId, released: this.#packetIds.get(t).released })),
    );
    if (!inFlight.length) return new Set();
    live.publish(now(), inFlight.map(([, p]) => p)).forEach((r, i) => this.#replayed(inFlight[i][0], r));
    return new Set(inFlight.map(([t]) => t));
  }

  #replayed(token, result) {
    if (result.tag === 'err') {
      // Refused by an instance with the same config: it fails now, never silently.
      this.#unacked.delete(token);
      this.#packetIds.delete(token);
      this.#backlog.push({ kind: 'error', value: `replay after restart refused: ${result.val.tag}` });
      this.#backlog.push({ kind: 'publish-failed', value: { token, code: 0 } });
    } else {
      this.#toHost.set(result.val, token);
    }
  }

  #takeIds() {
    if (this.#ids.broker !== null) {
      this.#sessionBroker = this.#ids.broker;
      this.#ids.broker = null;
    }
    for (const { token: guest, packetId, released } of this.#ids.reported) {
      const token = this.#toHost.get(guest);
      if (token != null && this.#unacked.has(token)) this.#packetIds.set(token, { packetId, released });
    }
    this.#ids.reported = [];
  }

  #newToken(guest) {
    const token = guest & STORED_TOKEN ? guest : this.#nextToken++;
    this.#toHost.set(guest, token);
    return token;
  }

  /// The instance's event under the application's tokens (null: not the application's).
  #translate(e) {
    if (e.kind === 'up') {
      this.#reportedUp = true;
      this.#everUp = true;
      this.#restarted = false;
    }
    if (e.kind === 'down') this.#reportedUp = false;
    if (e.kind === 'connect-failed' && this.#restarted && this.#connectRequested) {
      // As the Rust host does: the host stands in for the application that wanted the
      // connection, and tries again (the instance never retries a first attempt itself).
      clearTimeout(this.#retryTimer);
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        if (!this.#connectRequested || this.#closed || this.#failed) return;
        try {
          this.#call('connect');
        } catch (e) {
          this.#backlog.push({ kind: 'error', value: `reconnect after restart refused: ${e.message}` });
        }
        this.#schedule();
      }, Math.min(this.#config.backoffMaxMs, 5_000));
      return { kind: 'error', value: `reconnect after restart failed: ${e.value}` };
    }
    if (!['published', 'publish-failed', 'subscribed', 'unsubscribed'].includes(e.kind)) return e;
    const guest = e.kind === 'published' ? e.value : e.value.token;
    const token = this.#toHost.has(guest) ? this.#toHost.get(guest) : guest;
    this.#toHost.delete(guest);
    if (e.kind === 'published' || e.kind === 'publish-failed') {
      // Done with, here, even when the store keeps it for the next client (code 1): a fresh
      // instance has it from the store, and handing it over again would store it twice (the
      // next client then sent it twice, at QoS 2 too).
      this.#unacked.delete(token);
      this.#packetIds.delete(token);
    } else {
      const request = token === null ? undefined : this.#requests.get(token);
      this.#requests.delete(token);
      if (e.kind === 'subscribed' && request) this.#subscribed.push(request[1]);
      if (e.kind === 'unsubscribed' && request) {
        const gone = new Set(request[1]);
        this.#subscribed = this.#subscribed.map((subs) => subs.filter((s) => !gone.has(s.filter))).filter((subs) => subs.length);
      }
    }
    if (token === null) return null;
    return { kind: e.kind, value: e.kind === 'published' ? token : { ...e.value, token } };
  }

  // -- the loop ----------------------------------------------------------------------------

  #schedule() {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    setImmediate(() => this.#turn());
  }

  #turn() {
    this.#scheduled = false;
    if (this.#closed || this.#failed) return;
    let polled;
    try {
      polled = this.#call('poll', now(), 'up', this.#maxMessages);
    } catch (e) {
      // Replaced too often in a row: the client is done, and says so (`failed`, or thrown
      // into the event loop when nothing listens, as an unhandled `error` would be).
      if (this.listenerCount('failed') === 0) throw e;
      this.emit('failed', e);
      return;
    }
    if (polled) this.#failing = 0;
    this.#takeIds();
    const raw = this.#backlog;
    this.#backlog = [];
    if (polled) raw.push(...polled.events.map(event));
    else this.#schedule(); // replaced: poll the fresh instance at once
    clearTimeout(this.#timer);
    this.#timer = null;
    if (polled?.nextDeadline !== undefined) {
      const wait = Math.max(0, Number(polled.nextDeadline - now()));
      this.#timer = setTimeout(() => this.#schedule(), wait);
    }
    let messages = 0;
    for (const e of raw.map((r) => this.#translate(r)).filter(Boolean)) {
      if (e.kind === 'message') messages += 1;
      this.#settle(e);
      this.emit('event', e);
      if (e.kind === 'error' && this.listenerCount('error') === 0) this.#log('warn', e.value);
      else this.emit(e.kind, e.value);
    }
    // As many messages as asked for: more may wait in the component.
    if (messages >= this.#maxMessages) this.#schedule();
  }

  #settle(e) {
    const token = e.kind === 'published' ? e.value : e.kind === 'publish-failed' ? e.value.token : undefined;
    const w = token === undefined ? undefined : this.#waiting.get(token);
    if (!w) return;
    this.#waiting.delete(token);
    if (e.kind === 'published') w.resolve(token);
    else w.reject(new ClientError('publish-failed', `reason code ${e.value.code}`));
  }

  // -- the application's side ----------------------------------------------------------------

  /// Start connecting (`up` or `connect-failed` tells how it went).
  connect() {
    this.#connectRequested = true;
    // The application's own attempt: its failure is its to hear of (`connect-failed`), and
    // it replaces any retry made for it after a restart.
    this.#restarted = false;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#call('connect');
    this.#schedule();
  }

  /// Queue a publish; returns its token (a bigint), reported later by `published` (QoS 1:
  /// PUBACK; QoS 2: PUBCOMP; QoS 0: written) or `publish-failed`. Throws `ClientError` when
  /// the client refuses it.
  publish(topic, payload, { qos: level = 1, retain = false } = {}) {
    const answer = this.publishMany([[topic, payload, level, retain]])[0];
    if (answer instanceof ClientError) throw answer;
    return answer;
  }

  /// `publish`, as a promise settled when the broker has it (or it failed for good).
  publishAsync(topic, payload, options) {
    const token = this.publish(topic, payload, options);
    return new Promise((resolve, reject) => this.#waiting.set(token, { resolve, reject }));
  }

  /// Several publishes in one call: one answer per publish, in order, its token or the
  /// `ClientError` that refused it. Each is judged on its own: one refused as invalid does
  /// not stop those after it; after any other refusal (`queue-full`, `closed`), none is
  /// taken, and each is refused the same way.
  publishMany(publishes) {
    const records = publishes.map(([topic, payload, level = 1, retain = false]) => ({
      topic,
      payload: typeof payload === 'string' ? new TextEncoder().encode(payload) : new Uint8Array(payload),
      qos: qos(level),
      retain: Boolean(retain),
      properties: undefined,
      deadlineMs: undefined,
    }));
    this.#usable();
    const answers = [];
    // Why the publishes not taken were refused: made only when some were (an `Error` takes
    // its stack when made, which cost a quarter of the CPU when made for every call).
    let stop;
    // As many as there is room for (see `#room`), and more while the client refused some as
    // invalid, which takes no place: one call unless it did.
    while (answers.length < records.length && this.#room() > 0) {
      const start = answers.length;
      const offered = records.slice(start, start + this.#room());
      const results = this.#call('publish', now(), offered) ?? this.#call('publish', now(), offered);
      if (!results) throw new ClientFailed('the component failed twice in a row taking these publishes');
      for (const [i, r] of results.entries()) {
        if (r.tag === 'err') {
          answers.push(new ClientError(r.val.tag, r.val.val));
        } else {
          const token = this.#newToken(r.val);
          this.#unacked.set(token, offered[i]);
          answers.push(token);
        }
      }
      const refusals = answers.slice(start).filter((a) => a instanceof ClientError && a.kind !== 'invalid');
      if (refusals.length || results.length < offered.length) {
        stop = refusals.at(-1);
        break;
      }
    }
    while (answers.length < records.length) answers.push(stop ? new ClientError(stop.kind, stop.detail) : new ClientError('queue-full'));
    this.#schedule();
    return answers;
  }

  /// Subscribe to one filter (at `qos`) or to several `[filter, qos]` pairs; returns the token
  /// a `subscribed` event reports with the broker's answer.
  subscribe(filters, level = 1) {
    const pairs = typeof filters === 'string' ? [[filters, level]] : filters;
    const subs = pairs.map(([filter, q]) => ({ filter, qos: qos(q), noLocal: false, retainAsPublished: false, retainHandling: 0 }));
    return this.#request('subscribe', subs);
  }

  unsubscribe(filters) {
    return this.#request('unsubscribe', typeof filters === 'string' ? [filters] : filters);
  }

  /// Places left for the application's requests: `maxQueued` less the publishes and
  /// subscription changes it handed over that have not completed. The instance holds no more
  /// than that already, but after a restart it may take more: the fresh one is given room for
  /// the subscriptions it makes again, and keeps it once they are answered. Held to the
  /// config's figure, the next restart has room for all of it again.
  #room() {
    return Math.max(0, this.#config.maxQueued - this.#unacked.size - this.#requests.size);
  }

  #request(kind, arg) {
    this.#usable();
    if (this.#room() === 0) throw new ClientError('queue-full');
    const ask = () => this.#call(kind, ...(kind === 'subscribe' ? [arg, undefined] : [arg]));
    const guest = ask() ?? ask();
    if (guest === undefined) throw new ClientFailed(`the component failed twice in a row at \`${kind}\``);
    const token = this.#newToken(guest);
    this.#requests.set(token, [kind, arg]);
    this.#schedule();
    return token;
  }

  /// Send DISCONNECT (no will) on the next poll and stop; unacknowledged publishes are
  /// reported `publish-failed`.
  disconnect() {
    this.#connectRequested = false;
    this.#restarted = false;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const restarts = this.restarts;
    this.#call('disconnect');
    // The instance failed inside the call: the fresh one was handed back what was accepted,
    // and is closed too, so that those fail now (as Rust's `Device` does). Before, it was
    // left open, taking publishes that would never be sent.
    if (this.restarts !== restarts) this.#call('disconnect');
    this.#schedule();
  }

  isConnected() {
    return Boolean(this.#call('isConnected'));
  }

  stats() {
    const s = this.#call('stats') ?? this.#call('stats') ?? {};
    return { ...s, restarts: this.restarts };
  }

  /// Stop: no more polls, sockets closed (no DISCONNECT: call `disconnect` and wait for
  /// `down` first for a clean end).
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#retryTimer);
    this.#sockets.closeAll();
    this.#live = null;
    this.#flash?.close();
    this.#flash = undefined;
    for (const w of this.#waiting.values()) w.reject(new ClientError('closed'));
    this.#waiting.clear();
  }
}
