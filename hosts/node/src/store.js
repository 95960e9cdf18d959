// Flash in a file, for `Client.create(..., { store: 'path' })`: what the client accepted and
// the broker has not acknowledged survives the process (a crash, a kill, a power cut), and
// the next client on the file sends it.
//
// The file is the one the Rust and Python hosts keep: a 64-byte header (the magic `MQFLASH1`,
// then capacity, sector size and write size, little endian) and the flash image, with NOR
// rules (a write keeps `old & new`, an erase sets a sector to 0xff). The component lays its
// records out in the image and recovers them, so the same file serves any host.
//
// One store serves one client: a second opener would take the first's records for its own and
// erase them. The other hosts lock the file itself (flock), which Node cannot do; here a lock
// file beside it, `PATH.lock`, holding `PID node`, marks the store as this process's. The Rust
// and Python hosts make one too while they have a store (`PID rust`, `PID python`) and refuse
// a store whose lock file a live Node process wrote, so no two hosts share a store. A lock
// file whose process is gone is taken over. (A live process of any host is taken to have the
// store: Node cannot tell whether it still holds the flock.)

import fs from 'node:fs';

import { refuse } from './platform.js';

const MAGIC = Buffer.from('MQFLASH1');
const DATA = 64;
const MAX_CAPACITY = 16 * 1024 * 1024;
const MIN_SECTORS = 3;
/// The geometry a new file gets: 64 KiB in 4 KiB sectors, a small partition on an ESP32.
const DEFAULT = { capacity: 64 * 1024, sectorSize: 4096, writeSize: 4 };

export class StoreError extends Error {
  constructor(why) {
    super(why);
    this.name = 'StoreError';
  }
}

/// Why no store can have this geometry, or null (the core's rules, `Geometry::check`).
function unusable({ capacity, sectorSize, writeSize }) {
  if (writeSize < 1 || writeSize & (writeSize - 1) || writeSize > 256) return `storage write size ${writeSize} is not a power of two up to 256`;
  if (sectorSize < 256 || sectorSize % writeSize) return `storage sector size ${sectorSize} is under 256 bytes or not a multiple of the write size`;
  if (capacity % sectorSize || capacity / sectorSize < MIN_SECTORS) return `storage of ${capacity} bytes is not at least ${MIN_SECTORS} whole sectors of ${sectorSize}`;
  if (capacity > MAX_CAPACITY) return `${capacity} bytes is more than a store file holds (${MAX_CAPACITY})`;
  return null;
}

/// A header cut short while the file was made, zeros a file system left, or the magic with a
/// few bits flipped: repaired. Anything else is someone's file, left alone.
function couldBeOurHeader(start) {
  let flipped = 0;
  for (let i = 0; i < start.length; i++) for (let x = start[i] ^ MAGIC[i]; x; x >>= 1) flipped += x & 1;
  const prefix = MAGIC.subarray(0, start.length).equals(start);
  return prefix || (start.length === MAGIC.length && flipped <= 4) || start.every((b) => b === 0);
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

// Tries at making the lock file: another opener may take over a stale one at the same
// moment (as the Rust and Python hosts, which stop after as many).
const LOCK_TRIES = 3;

function lock(path, log) {
  const lockPath = `${path}.lock`;
  for (let tries = 0; tries < LOCK_TRIES; tries++) {
    try {
      fs.writeFileSync(lockPath, `${process.pid} node\n`, { flag: 'wx' });
      return lockPath;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
      let text;
      try {
        text = fs.readFileSync(lockPath, 'utf8');
      } catch (e) {
        if (e.code === 'ENOENT') continue; // gone again meanwhile: the next try makes it
        throw e;
      }
      // `PID HOST`; before the hosts agreed on it, Node wrote the pid alone.
      const [first, host = 'node'] = text.trim().split(/\s+/);
      const pid = Number(first);
      const named = Number.isInteger(pid) && pid > 0;
      if (named && alive(pid)) {
        throw new StoreError(
          `${path}: in use by another client (process ${pid}, the ${host} host, holds ${lockPath}); one store serves one client (if that process is not a client of this store, remove the file)`,
        );
      }
      log('warn', `${lockPath}: took over the lock file: ${named ? `process ${pid} (${host}) is gone` : 'it names no process'}`);
      fs.rmSync(lockPath, { force: true });
    }
  }
  throw new StoreError(`${lockPath}: another client is taking this store at the same moment`);
}

export class FileFlash {
  constructor(path, log, geometry = DEFAULT) {
    const why = unusable(geometry);
    if (why) throw new StoreError(why);
    this.path = path;
    this.lockPath = lock(path, log);
    this.log = log;
    try {
      this.fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
      const size = fs.fstatSync(this.fd).size;
      const header = Buffer.alloc(20);
      const have = fs.readSync(this.fd, header, 0, 20, 0);
      const found = { capacity: header.readUInt32LE(8), sectorSize: header.readUInt32LE(12), writeSize: header.readUInt32LE(16) };
      let g = geometry;
      if (have === 20 && header.subarray(0, 8).equals(MAGIC) && !unusable(found)) {
        g = found;
      } else {
        if (size > 0) {
          if (!couldBeOurHeader(header.subarray(0, Math.min(have, 8)))) {
            throw new StoreError(`${path}: not a store file (it does not begin with MQFLASH1); left as it is: remove it or give another path`);
          }
          log('warn', `${path}: the header is damaged; rewritten for ${g.capacity} bytes in ${g.sectorSize}-byte sectors`);
        }
        const fresh = Buffer.alloc(20);
        MAGIC.copy(fresh);
        fresh.writeUInt32LE(g.capacity, 8);
        fresh.writeUInt32LE(g.sectorSize, 12);
        fresh.writeUInt32LE(g.writeSize, 16);
        fs.writeSync(this.fd, fresh, 0, 20, 0);
      }
      const want = DATA + g.capacity;
      const now = fs.fstatSync(this.fd).size;
      if (now < want) {
        if (now > DATA) log('warn', `${path}: ${now - DATA} of ${g.capacity} bytes; the rest reads as erased`);
        const from = Math.max(now, DATA);
        fs.writeSync(this.fd, Buffer.alloc(want - from, 0xff), 0, want - from, from);
      }
      fs.fsyncSync(this.fd);
      Object.assign(this, g);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  #at(offset, len) {
    return offset + len <= this.capacity ? DATA + offset : null;
  }

  #io(what, run) {
    try {
      return run();
    } catch (e) {
      this.log('error', `store file ${this.path}: ${what} failed: ${e.message}`);
      return refuse('io');
    }
  }

  // The contract's `storage` interface: each returns its `ok`, or throws its `err` (see
  // `Refused`).

  read(offset, len) {
    const at = this.#at(offset, len);
    if (at === null) return refuse('out-of-range');
    return this.#io('read', () => {
      const buf = Buffer.alloc(len);
      fs.readSync(this.fd, buf, 0, len, at);
      return new Uint8Array(buf);
    });
  }

  write(offset, data) {
    if (offset % this.writeSize || data.length % this.writeSize) return refuse('out-of-range');
    const at = this.#at(offset, data.length);
    if (at === null) return refuse('out-of-range');
    return this.#io('write', () => {
      // NOR: the cells keep `old & new`.
      const cells = Buffer.alloc(data.length);
      fs.readSync(this.fd, cells, 0, data.length, at);
      for (let i = 0; i < cells.length; i++) cells[i] &= data[i];
      fs.writeSync(this.fd, cells, 0, cells.length, at);
    });
  }

  erase(sector) {
    const at = this.#at(sector * this.sectorSize, this.sectorSize);
    if (at === null) return refuse('out-of-range');
    return this.#io('erase', () => {
      fs.writeSync(this.fd, Buffer.alloc(this.sectorSize, 0xff), 0, this.sectorSize, at);
    });
  }

  sync() {
    return this.#io('fsync', () => {
      fs.fsyncSync(this.fd);
    });
  }

  close() {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    if (this.lockPath) fs.rmSync(this.lockPath, { force: true });
    this.lockPath = undefined;
  }
}
