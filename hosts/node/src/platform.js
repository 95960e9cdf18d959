// The interfaces the component imports, for a Node.js process: sockets over `net` and `tls`
// (TCP_NODELAY, names resolved without blocking), the monotonic clock, a link that is always
// up (the operating system manages it), flash in a file or none, and logging.
//
// The contract's sockets are polled, and Node's are evented: each socket here keeps what
// arrived until the component's `recv` takes it, and tells the client (`wake`) when anything
// moved, so that it polls the component. What waits unread is bounded: past
// `READ_AHEAD` bytes the socket is paused, so a client that stops reading (its application
// holding `queue_len` messages) holds the broker back through TCP, as the other hosts do.

import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';

// jco names an imported interface without its version.
export const INTERFACE = (name) => `mqtt-as:client/${name}`;

/// Bytes a socket keeps unread before it is paused.
const READ_AHEAD = 256 * 1024;
/// Bytes a socket may have waiting to be written before `send` takes no more.
const WRITE_AHEAD = 64 * 1024;

/// The (host, port) pairs the client may open: `server` and every failover broker, each port
/// defaulting as the config's `port` says (1883, or 8883 with `ssl`). Anywhere else is refused
/// `not-permitted`, as the other hosts refuse it.
export function allowedBrokers(server, port, ssl, servers) {
  const fallback = port ?? (ssl ? 8883 : 1883);
  const out = [[server, fallback]];
  for (const s of servers) {
    const m = /^\[?(.*?)\]?:(\d+)$/.exec(s);
    out.push(m && !m[1].endsWith(':') ? [m[1], Number(m[2])] : [s.replace(/^\[|\]$/g, ''), fallback]);
  }
  return out;
}

/// A Node error as the contract's `socket-error`.
function errorName(e) {
  const code = e?.code ?? '';
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ECONNABORTED') return 'reset';
  if (code === 'ETIMEDOUT') return 'timed-out';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_FAIL') return 'dns-failed';
  if (code === 'ENETUNREACH' || code === 'EHOSTUNREACH' || code === 'ENETDOWN') return 'unreachable';
  if (/^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|HOSTNAME_MISMATCH|ERR_OSSL)/.test(code)) return 'tls-failed';
  return 'other';
}

/// An import's answer is jco's convention for a `result`: what it returns is the `ok`, and a
/// value it throws with a `payload` of its own is the `err` (a thrown `Error` is a trap). Every
/// jco takes that; the newer ones also take a returned `{ tag, val }`, which the one
/// `build.mjs` pins does not (see there).
export class Refused {
  constructor(payload) {
    this.payload = payload;
  }
}

/// Ends the import with `err(payload)`.
export function refuse(payload) {
  throw new Refused(payload);
}

export class Sockets {
  #allowed;
  #wake;
  #log;
  #socks = new Map();
  #next = 0;

  /// `wake()` is called whenever a socket moved (connected, data, drained, failed, ended).
  constructor(allowed, wake, log) {
    this.#allowed = allowed;
    this.#wake = wake;
    this.#log = log;
  }

  open(host, port, params) {
    if (!this.#allowed.some(([h, p]) => h === host && p === port)) {
      this.#log('warn', `refused a connection to ${host}:${port}: not a configured broker`);
      return refuse('not-permitted');
    }
    let sock;
    const s = { state: 'connecting', error: null, chunks: [], buffered: 0, ended: false, sock: null };
    try {
      if (params) {
        sock = tls.connect({
          host,
          port,
          servername: params.serverName,
          ca: params.caFile ? fs.readFileSync(params.caFile) : undefined,
          cert: params.clientCertFile ? fs.readFileSync(params.clientCertFile) : undefined,
          key: params.clientKeyFile ? fs.readFileSync(params.clientKeyFile) : undefined,
          ALPNProtocols: params.alpn.length ? params.alpn : undefined,
          rejectUnauthorized: true,
        });
      } else {
        sock = net.connect({ host, port });
      }
    } catch (e) {
      this.#log('warn', `opening ${host}:${port} failed: ${e.message}`);
      return refuse(params ? 'tls-failed' : errorName(e));
    }
    // Every MQTT packet leaves at once, as the other hosts send them.
    sock.setNoDelay(true);
    s.sock = sock;
    sock.on(params ? 'secureConnect' : 'connect', () => {
      s.state = 'open';
      this.#wake();
    });
    sock.on('data', (chunk) => {
      s.chunks.push(chunk);
      s.buffered += chunk.length;
      if (s.buffered > READ_AHEAD) sock.pause();
      this.#wake();
    });
    sock.on('drain', () => this.#wake());
    sock.on('end', () => {
      s.ended = true;
      this.#wake();
    });
    sock.on('error', (e) => {
      if (s.state !== 'failed') this.#log('info', `socket to ${host}:${port}: ${e.message}`);
      s.state = 'failed';
      s.error = errorName(e);
      this.#wake();
    });
    sock.on('close', () => {
      s.ended = true;
      this.#wake();
    });
    this.#next += 1;
    this.#socks.set(this.#next, s);
    return this.#next;
  }

  status(handle) {
    const s = this.#socks.get(handle);
    if (!s) return refuse('bad-handle');
    if (s.state === 'failed') return refuse(s.error);
    if (s.state === 'open') return 'open';
    return s.ended ? refuse('closed') : 'connecting';
  }

  send(handle, data) {
    const s = this.#socks.get(handle);
    if (!s) return refuse('bad-handle');
    if (s.state === 'failed') return refuse(s.error);
    if (s.state !== 'open') return 0;
    if (s.ended || s.sock.destroyed) return refuse('closed');
    // Node queues what the kernel does not take yet; past WRITE_AHEAD the component keeps
    // the rest and tries again when `drain` wakes it.
    if (s.sock.writableLength > WRITE_AHEAD) return 0;
    // The bindings hand over a copy of the component's bytes that nothing else holds: the
    // socket may keep it as it is (a view, not another copy).
    s.sock.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    return data.length;
  }

  /// Up to `max` bytes that arrived; an empty answer (or a short one) means nothing more now:
  /// the client is woken when more comes.
  recv(handle, max) {
    const s = this.#socks.get(handle);
    if (!s) return refuse('bad-handle');
    if (s.state === 'failed' && s.buffered === 0) return refuse(s.error);
    if (s.state !== 'open' && s.buffered === 0) return new Uint8Array(0);
    if (s.buffered === 0) return s.ended ? refuse('closed') : new Uint8Array(0);
    const parts = [];
    let taken = 0;
    while (s.chunks.length && taken < max) {
      const c = s.chunks[0];
      const n = Math.min(c.length, max - taken);
      parts.push(c.subarray(0, n));
      if (n === c.length) s.chunks.shift();
      else s.chunks[0] = c.subarray(n);
      taken += n;
    }
    s.buffered -= taken;
    if (s.buffered <= READ_AHEAD / 2 && s.sock.isPaused()) s.sock.resume();
    // The bindings copy what this returns into the component's memory at once, so a view of
    // a chunk will do; several are joined (one copy).
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, taken);
  }

  close(handle) {
    const s = this.#socks.get(handle);
    if (s) {
      this.#socks.delete(handle);
      s.sock.destroy();
    }
  }

  closeAll() {
    for (const h of [...this.#socks.keys()]) this.close(h);
  }
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/// Every import the component needs, for one client; `flash` is a `FileFlash` or undefined.
export function imports({ sockets, ids, log, flash }) {
  const origin = performance.timeOrigin;
  return {
    [INTERFACE('socket')]: {
      open: (host, port, params) => sockets.open(host, port, params),
      status: (h) => sockets.status(h),
      send: (h, data) => sockets.send(h, data),
      recv: (h, max) => sockets.recv(h, max),
      close: (h) => sockets.close(h),
    },
    [INTERFACE('clock')]: {
      nowMs: () => BigInt(Math.floor(performance.now())),
      wallMs: () => BigInt(Math.floor(origin + performance.now())),
    },
    [INTERFACE('wifi')]: {
      // The operating system manages the link: it is up, and joining is not ours to do.
      state: () => 'up',
      connect: () => {},
      disconnect: () => {},
      rssi: () => undefined,
    },
    [INTERFACE('storage')]: flash
      ? {
          geometry: () => ({ capacity: flash.capacity, sectorSize: flash.sectorSize, writeSize: flash.writeSize }),
          read: (offset, len) => flash.read(offset, len),
          write: (offset, data) => flash.write(offset, data),
          erase: (sector) => flash.erase(sector),
          sync: () => flash.sync(),
        }
      : {
          // No flash: capacity 0, so nothing is kept across a restart of the process (the
          // contract's "host without storage"); nothing else is called.
          geometry: () => ({ capacity: 0, sectorSize: 4096, writeSize: 4 }),
          read: () => refuse('out-of-range'),
          write: () => refuse('out-of-range'),
          erase: () => refuse('out-of-range'),
          sync: () => {},
        },
    [INTERFACE('packet-ids')]: {
      sent: (publishes) => ids.sent(publishes),
      session: (broker) => ids.session(broker),
    },
    [INTERFACE('log')]: {
      log: (level, message) => log(level, message),
    },
  };
}

export { LEVELS };
