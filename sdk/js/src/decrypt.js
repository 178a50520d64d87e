// Decrypt confused labels.
//   Format 1: M = u3 − (a·u1 + b·u2); label = SHA-256("encryip/v1/label" ‖ M) mod K.
//   Format 2: M = u_last − (a·u1 + Σ b_i·u_{i+1}); M = M_0 + i·h for one index i of the
//   key's table -> label = i mod K; an element outside the table (a wrong key, garbage)
//   -> SHA-256("encryip/v2/label" ‖ M) mod K.
// Every element decodes to a label (a wrong key gives wrong labels, never an error), so
// no decryption reveals whether a ciphertext is a trigger.
import { EncodingError } from './errors.js';
import {
  BYTES,
  add,
  bigEndianMod,
  bytesToHex,
  checkElement,
  checkEncoding,
  concat,
  hexToBytes,
  isZero,
  mul,
  sha256,
  sub,
} from './ristretto.js';

const LABEL_DOMAIN = new TextEncoder().encode('encryip/v1/label');
const FALLBACK_DOMAIN_V2 = new TextEncoder().encode('encryip/v2/label');
// L, the group order (for the scalar of a negative table index).
const L = (1n << 252n) + 27742317777372353535851937790883648493n;

// A libsodium scalar multiplication costs about 4 group additions in WebAssembly.
const SCALARMULT_IN_ADDS = 4;

/**
 * Σ b_i·u_i. Format 1: one full scalar b (one multiplication). Format 2: small b_i in
 * [0, K), so Straus' interleaved double-and-add over their few bits (one shared doubling
 * per bit, one addition per set bit) when that costs fewer additions than n
 * multiplications (K = 10, n = 5: about 10 additions instead of 5 multiplications).
 * @param {import('./keys.js').LicenseeKey} key
 * @param {Uint8Array[]} us
 */
function smallCombination(key, us) {
  const plan = key.smallPlan ?? (key.smallPlan = straussPlan(key));
  if (plan === null) {
    return key.sk.b.reduce((acc, b, i) => add(acc, mul(b, us[i])), new Uint8Array(BYTES));
  }
  let acc = null;
  for (const terms of plan) {
    if (acc !== null) acc = add(acc, acc);
    for (const i of terms) acc = acc === null ? us[i] : add(acc, us[i]);
  }
  return acc ?? new Uint8Array(BYTES);
}

/**
 * For each bit of the b_i, high to low, the components whose b_i has it set; null where
 * plain multiplications are cheaper (format 1, or wide b_i).
 * @param {import('./keys.js').LicenseeKey} key
 * @returns {number[][] | null}
 */
function straussPlan(key) {
  if (key.version === 1) return null;
  const b = key.sk.b.map((s) => s[0] + 256 * s[1] + 65536 * s[2]);
  const bits = Math.max(1, ...b.map((v) => (v === 0 ? 0 : Math.floor(Math.log2(v)) + 1)));
  const plan = [];
  for (let bit = bits - 1; bit >= 0; bit--) plan.push(b.flatMap((v, i) => ((v >> bit) & 1 ? [i] : [])));
  const adds = bits - 1 + plan.reduce((n, t) => n + t.length, 0);
  return adds < SCALARMULT_IN_ADDS * b.filter((v) => v > 1).length + b.filter((v) => v === 1).length ? plan : null;
}

/**
 * One ciphertext as bytes: a Uint8Array of the wire width, or its lowercase hex (the OIP v2
 * JSON form of the BYTES output).
 * @param {Uint8Array | string} ct
 * @param {number} width
 * @param {string} what
 */
export function ciphertextBytes(ct, width, what = 'ciphertext') {
  if (typeof ct === 'string') return hexToBytes(ct, width, what);
  if (!(ct instanceof Uint8Array)) throw new EncodingError(`${what}: expected bytes or a hex string`);
  if (ct.length !== width) throw new EncodingError(`${what}: expected ${width} bytes, got ${ct.length}`);
  return ct;
}

/**
 * The label rule of the secure profile (format 1).
 * @param {Uint8Array} message
 * @param {number} numClasses
 */
export function labelOf(message, numClasses) {
  return bigEndianMod(sha256(concat(LABEL_DOMAIN, message)), numClasses);
}

/** @param {bigint} k -> 32-byte little-endian scalar of k mod L */
function scalarOf(k) {
  let x = ((k % L) + L) % L;
  const out = new Uint8Array(BYTES);
  for (let i = 0; i < BYTES; i++, x >>= 8n) out[i] = Number(x & 0xffn);
  return out;
}

/** @param {Uint8Array} x first 8 bytes, little-endian */
function prefix(x) {
  return new DataView(x.buffer, x.byteOffset, 8).getBigUint64(0, true);
}

/**
 * Format 2's table: the first 8 bytes of M_0 + i·h -> i, built once per key (about one
 * group addition per entry: K·R + a margin entries, e.g. 20,480 for K = 10).
 * @param {import('./keys.js').LicenseeKey} key
 */
export function labelTable(key) {
  const t = key.labels;
  if (t === null) throw new Error('format 1 keys have no label table');
  if (!t.map) {
    const map = new Map();
    let m = add(t.m0, mul(scalarOf(BigInt(t.indexMin)), key.pk.h));
    for (let i = t.indexMin; i < t.indexMax; i++) {
      const p = prefix(m);
      if (map.has(p)) throw new EncodingError('label table: two indices share an 8-byte prefix');
      map.set(p, i);
      m = add(m, key.pk.h);
    }
    t.map = map;
  }
  return t.map;
}

/**
 * The label of a decrypted element under format 2.
 * @param {Uint8Array} message
 * @param {import('./keys.js').LicenseeKey} key
 */
export function labelOfV2(message, key) {
  const i = labelTable(key).get(prefix(message));
  const k = key.numClasses;
  if (i === undefined) return bigEndianMod(sha256(concat(FALLBACK_DOMAIN_V2, message)), k);
  return ((i % k) + k) % k;
}

/**
 * The class index of one confused label.
 * @param {Uint8Array | string} ciphertext
 * @param {import('./keys.js').LicenseeKey} key
 * @returns {number}
 */
export function decrypt(ciphertext, key) {
  return decryptBatch([ciphertext], key)[0];
}

/**
 * Class indices of many confused labels; an EncodingError names the malformed row.
 * @param {Iterable<Uint8Array | string>} ciphertexts
 * @param {import('./keys.js').LicenseeKey} key
 * @returns {number[]}
 */
export function decryptBatch(ciphertexts, key) {
  const out = [];
  let i = 0;
  for (const item of ciphertexts) {
    const what = `ciphertext ${i}`;
    const c = ciphertextBytes(item, key.ciphertextSize, what);
    const n = key.ciphertextSize / BYTES;
    const u = [];
    for (let k = 0; k < n; k++) u.push(checkEncoding(c.subarray(k * BYTES, (k + 1) * BYTES), `${what}: element ${k}`));
    // libsodium decodes (and so validates) every element an operation uses; name the bad
    // one only when it refuses, and check the few no operation touches (zero b_i).
    let m;
    try {
      m = sub(u[n - 1], add(mul(key.sk.a, u[0]), smallCombination(key, u.slice(1, n - 1))));
    } catch (e) {
      u.forEach((x, k) => checkElement(x, `${what}: element ${k}`));
      throw e;
    }
    if (isZero(key.sk.a)) checkElement(u[0], `${what}: element 0`);
    key.sk.b.forEach((b, i) => {
      if (isZero(b)) checkElement(u[i + 1], `${what}: element ${i + 1}`);
    });
    out.push(key.version === 1 ? labelOf(m, key.numClasses) : labelOfV2(m, key));
    i++;
  }
  return out;
}

export { bytesToHex };
