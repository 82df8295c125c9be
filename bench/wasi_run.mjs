// Runs a wasm32-wasip1 command module under node's WASI (V8, the engine Envoy embeds).
// Usage: node bench/wasi_run.mjs FILE.wasm [-- ARGS...]
import { WASI } from 'node:wasi';
import { readFileSync } from 'node:fs';
import { argv, exit } from 'node:process';

const file = argv[2];
const sep = argv.indexOf('--');
const args = sep >= 0 ? argv.slice(sep + 1) : argv.slice(3);
const wasi = new WASI({ version: 'preview1', args: [file, ...args], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(readFileSync(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
exit(wasi.start(instance));
