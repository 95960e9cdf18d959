// A real Mosquitto per test, started on a free loopback port, as the Rust and Python tests
// start it: ready once its log says "running", killed at the end.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Mosquitto {
  constructor(dir, port, settings) {
    this.dir = dir;
    this.port = port;
    this.settings = settings;
    this.proc = null;
  }

  static async start(settings = '') {
    const m = new Mosquitto(mkdtempSync(join(tmpdir(), 'mosquitto-node-')), await freePort(), settings);
    await m.start();
    return m;
  }

  async start() {
    const conf = join(this.dir, 'mosquitto.conf');
    // As root, Mosquitto drops to its own user, which may not write to our directory.
    const user = process.getuid?.() === 0 ? 'user root\n' : '';
    writeFileSync(conf, `listener ${this.port} 127.0.0.1\nallow_anonymous true\n${user}${this.settings}`);
    const log = join(this.dir, 'mosquitto.log');
    writeFileSync(log, '');
    this.proc = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    let text = '';
    this.proc.stderr.on('data', (d) => (text += d));
    // Ready once every listener is bound: Mosquitto logs "... running".
    for (let i = 0; i < 200; i++) {
      if (this.proc.exitCode !== null) throw new Error(`mosquitto exited at start: ${text}`);
      if (text.split('\n').some((l) => l.endsWith(' running'))) return;
      await sleep(25);
    }
    this.proc.kill('SIGKILL');
    throw new Error(`mosquitto did not report running within 5 s: ${text}`);
  }

  /// SIGTERM lets it save its sessions (with `persistence true`), SIGKILL not.
  async stop(signal = 'SIGKILL') {
    if (!this.proc || this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill(signal);
    await exited;
    this.proc = null;
  }

  async remove() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/// A CA and a certificate for `localhost` signed by it, made with the openssl command.
export function tlsFiles(dir) {
  const run = (args) => {
    const r = spawnSync('openssl', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr || r.error}`);
  };
  const p = (n) => join(dir, n);
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=test CA', '-keyout', p('ca.key'), '-out', p('ca.pem')]);
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=localhost', '-keyout', p('key.pem'), '-out', p('req.csr')]);
  writeFileSync(p('ext.cnf'), 'subjectAltName=DNS:localhost\n');
  run(['x509', '-req', '-in', p('req.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', p('ext.cnf'), '-out', p('cert.pem')]);
  return { ca: p('ca.pem'), cert: p('cert.pem'), key: p('key.pem') };
}

