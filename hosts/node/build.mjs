// Transpiles the component (host/component/mqtt_client.wasm, the bytes every host runs) into
// JavaScript bindings and core wasm modules under gen/, with jco. `npm run build`; the tests
// and `src/` import gen/mqtt_client.js. The imports are given at instantiation ("async"
// instantiation), so each client gets its own sockets.
import { readFile, mkdir, writeFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transpile } from '@bytecodealliance/jco';

const here = dirname(fileURLToPath(import.meta.url));
const component = process.env.MQTT_COMPONENT ?? join(here, '../../host/component/mqtt_client.wasm');
const out = join(here, 'gen');

// jco is pinned to 1.13.0 (package.json), the last release whose bindings make nothing per
// call beyond the call itself. From 1.14 on (and in jco-transpile, the transpiler on its own,
// from its first release) they wrap every call across the component boundary, import or
// export, in the component model's async task bookkeeping (an object of some forty fields,
// ids, a scope map), even for a component with no async function. Measured side by side with
// MQTT.js (README, "Speed"): 0.84× its rate with jco-transpile 0.15.0, 1.14–1.21× with
// jco-transpile 0.1.1, 1.38–1.42× with jco 1.13.0. The host follows jco's calling
// convention for results (an import throws its `err`: `Refused` in src/platform.js), which
// every version takes, so moving to a later jco is a change of this pin and nothing else.
const { files } = await transpile(await readFile(component), {
  name: 'mqtt_client',
  instantiation: 'async',
  wasiShim: false,
  emitTypescriptDeclarations: true,
});
// jco's bindings read `process.env.JCO_DEBUG` at every step of every call to decide whether
// to log it (a lookup into the C++ environment each time: 7 % of the CPU of a QoS 1 run in a
// profile). Read it once, at load, instead; the build fails if jco changes the line, rather
// than ship without the fix unnoticed.
const DEBUG_CHECK = 'if (!globalThis?.process?.env?.JCO_DEBUG) { return; }';
const js = new TextDecoder().decode(files['mqtt_client.js']);
if (js.split(DEBUG_CHECK).length !== 2) throw new Error(`jco's debug check is not where build.mjs expects it: ${DEBUG_CHECK}`);
files['mqtt_client.js'] = new TextEncoder().encode(
  'const JCO_DEBUG = Boolean(globalThis?.process?.env?.JCO_DEBUG);\n' + js.replace(DEBUG_CHECK, 'if (!JCO_DEBUG) { return; }'),
);

await rm(out, { recursive: true, force: true });
for (const [name, bytes] of Object.entries(files)) {
  const path = join(out, name);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
}
console.log(`transpiled ${component} into ${out} (${Object.keys(files).length} files)`);
