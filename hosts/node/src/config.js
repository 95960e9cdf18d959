// The component's `config` record from an object of settings.
//
// The keys, their types and their defaults are the core's (`hosts/config_keys.json`, made
// from the Rust core's one list of keys by `host/tests/host_config_keys.rs`), so this host
// cannot drift from the others: a key takes the name a scenario file or the board's
// `--config` file gives it (`keepalive_s`, or `keepalive`), its field name
// (`keepalive_secs`), or that in camelCase (`keepaliveSecs`). A value of the wrong type is
// refused here, naming the key; a value of the right type that cannot work (`port: 0`) is
// refused by the component's `create`, naming the key too.

import { readFileSync } from 'node:fs';

const KEYS = JSON.parse(readFileSync(new URL('../../config_keys.json', import.meta.url), 'utf8')).keys;

export const QOS_NAMES = ['at-most-once', 'at-least-once', 'exactly-once'];

const camel = (snake) => snake.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());

// Every name a key answers to.
const BY_NAME = new Map();
for (const k of KEYS) {
  for (const name of [k.name, k.field, camel(k.field), ...k.aliases]) BY_NAME.set(name, k);
}

export class ConfigError extends Error {
  constructor(key, why) {
    super(`config key \`${key}\`: ${why}`);
    this.name = 'ConfigError';
    this.key = key;
  }
}

function integer(key, value, bits) {
  const big = typeof value === 'bigint';
  if (!big && !Number.isInteger(value)) throw new ConfigError(key, `expected a whole number, got ${JSON.stringify(value)}`);
  const max = (1n << BigInt(bits)) - 1n;
  const v = BigInt(value);
  if (v < 0n || v > max) throw new ConfigError(key, `${value} is out of range (0..${max})`);
  return bits === 64 ? v : Number(v);
}

function text(key, value) {
  if (typeof value !== 'string') throw new ConfigError(key, `expected text, got ${JSON.stringify(value)}`);
  return value;
}

function bytes(key, value) {
  if (typeof value === 'string') return new TextEncoder().encode(value);
  if (value instanceof Uint8Array) return value;
  throw new ConfigError(key, `expected bytes or text, got ${JSON.stringify(value)}`);
}

/// A JavaScript value as the WIT field of type `ty` (as the core's list spells it) takes it.
function convert(key, ty, value) {
  if (ty.startsWith('Option<')) return value === null || value === undefined ? undefined : convert(key, ty.slice(7, -1), value);
  switch (ty) {
    case 'bool':
      if (typeof value !== 'boolean') throw new ConfigError(key, `expected true or false, got ${JSON.stringify(value)}`);
      return value;
    case 'u16':
    case 'u32':
    case 'u64':
      return integer(key, value, Number(ty.slice(1)));
    case 'String':
      return text(key, value);
    case 'Vec<u8>':
      return bytes(key, value);
    case 'Vec<String>':
      if (!Array.isArray(value)) throw new ConfigError(key, `expected a list of text, got ${JSON.stringify(value)}`);
      return value.map((v) => text(key, v));
    case 'Vec<(String,String)>': {
      const pairs = Array.isArray(value) ? value : Object.entries(value ?? {});
      return pairs.map((p) => {
        if (!Array.isArray(p) || p.length !== 2) throw new ConfigError(key, `expected [name, value] pairs, got ${JSON.stringify(value)}`);
        return [text(key, p[0]), text(key, p[1])];
      });
    }
    default:
      throw new ConfigError(key, `this host cannot convert a value of type ${ty}`);
  }
}

function qos(key, level) {
  if (![0, 1, 2].includes(level)) throw new ConfigError(key, `qos ${JSON.stringify(level)} must be 0, 1 or 2`);
  return QOS_NAMES[level];
}

function will(w) {
  if (typeof w !== 'object' || w === null) throw new ConfigError('will', `expected { topic, payload, qos, retain, delay_s }, got ${JSON.stringify(w)}`);
  return {
    topic: text('will.topic', w.topic),
    payload: bytes('will.payload', w.payload ?? ''),
    qos: qos('will.qos', w.qos ?? 1),
    retain: Boolean(w.retain),
    delaySecs: w.delay_s === undefined ? undefined : integer('will.delay_s', w.delay_s, 32),
    properties: undefined,
  };
}

function tlsParams(t) {
  if (typeof t !== 'object' || t === null) throw new ConfigError('ssl_params', `expected { server_name, ca_file, ... }, got ${JSON.stringify(t)}`);
  const opt = (k) => (t[k] === undefined ? undefined : text(`ssl_params.${k}`, t[k]));
  return {
    serverName: text('ssl_params.server_name', t.server_name),
    caFile: opt('ca_file'),
    clientCertFile: opt('client_cert_file'),
    clientKeyFile: opt('client_key_file'),
    alpn: (t.alpn ?? []).map((a) => text('ssl_params.alpn', a)),
  };
}

/// The `config` record: the core's defaults, `server` and `clientId`, then `settings` (any key
/// by any of its names, plus `will` and `ssl_params`).
export function buildConfig(server, clientId, settings = {}) {
  const config = {};
  for (const k of KEYS) config[camel(k.field)] = k.default === null ? undefined : convert(k.field, k.type, k.default);
  config.server = text('server', server);
  config.clientId = text('client_id', clientId);
  config.sslParams = undefined;
  config.will = undefined;
  for (const [key, value] of Object.entries(settings)) {
    if (key === 'will') config.will = value == null ? undefined : will(value);
    else if (key === 'ssl_params' || key === 'sslParams') config.sslParams = value == null ? undefined : tlsParams(value);
    else {
      const spec = BY_NAME.get(key);
      if (!spec) throw new ConfigError(key, 'no such key');
      config[camel(spec.field)] = convert(key, spec.type, value);
    }
  }
  return config;
}
