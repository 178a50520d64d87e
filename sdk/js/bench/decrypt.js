// Time the JavaScript SDK's decryption per row, and its parts, on the ciphertexts of a
// file written by benchmarks/js_decrypt.py: {"key": {...}, "ciphertexts": [hex, ...],
// "labels": [...]}. Prints one JSON line. Usage: node bench/decrypt.js FILE [repeats]
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

import { decryptBatch, loadKey, ready } from '../src/index.js';
import { BYTES, checkElement, hexToBytes, mul, sha256, sub } from '../src/ristretto.js';

const [file, repeatsArg] = process.argv.slice(2);
const doc = JSON.parse(readFileSync(file, 'utf8'));
const repeats = Number(repeatsArg ?? 3);
await ready();
const key = loadKey(doc.key);
const cts = doc.ciphertexts.map((/** @type {string} */ h) => hexToBytes(h, h.length / 2, 'ct'));

/** @param {() => void} fn */
function best(fn) {
  let t = Infinity;
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    fn();
    t = Math.min(t, performance.now() - t0);
  }
  return (t * 1000) / cts.length; // µs per row
}

decryptBatch(cts.slice(0, 1), key); // warm: format 2 builds its label table on first use
let labels = [];
const total = best(() => {
  labels = decryptBatch(cts, key);
});
const wrong = labels.filter((y, i) => y !== doc.labels[i]).length;
if (wrong) throw new Error(`${wrong} labels differ from Python`);
const n = key.ciphertextSize / BYTES;
const elems = cts.map((c) => Array.from({ length: n }, (_, k) => c.subarray(k * BYTES, (k + 1) * BYTES)));
const decode = best(() => elems.forEach((u) => u.forEach((x) => checkElement(x, 'x'))));
// a·u1 alone (one libsodium scalar multiplication), and sub + SHA-256 of the result;
// the rest of the total is Σ b_i·u_{i+1} (and format 2's table lookup).
const scalarmult = best(() => elems.forEach((u) => mul(key.sk.a, u[0])));
const rest = best(() => elems.forEach((u) => sha256(sub(u[n - 1], u[0]))));
console.log(
  JSON.stringify({ rows: cts.length, format: key.version, us_per_row: total, decode_us: decode, a_u1_us: scalarmult, sub_hash_us: rest, b_terms_us: total - decode - scalarmult - rest }),
);
