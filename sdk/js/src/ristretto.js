// ristretto255 through libsodium (WebAssembly): strict decoding of elements and scalars,
// and the few group operations a licensee needs. Mirrors encryip_runtime/crypto/ristretto.py.
import { EncodingError } from './errors.js';

/** @type {any} */
let sodium = null;

/** Resolve once libsodium's WebAssembly is loaded. Every other call needs it. */
export async function ready() {
  if (sodium === null) {
    // libsodium's ESM build wants Web Crypto's getRandomValues, global from Node 19 on;
    // on Node 18 take it from node:crypto (browsers always have it).
    if (typeof globalThis.crypto?.getRandomValues !== 'function') {
      const { webcrypto } = await import('node:crypto');
      Object.defineProperty(globalThis, 'crypto', { value: webcrypto, configurable: true });
    }
    const mod = await import('libsodium-wrappers-sumo');
    await mod.default.ready;
    sodium = mod.default;
  }
}

/** @returns {any} */
export function lib() {
  if (sodium === null) throw new Error('call `await ready()` before using the EncryIP SDK');
  return sodium;
}

export const BYTES = 32;
export const GROUP_NAME = 'ristretto255';
// L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const L_LE = hexToBytesUnchecked('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010');
export const IDENTITY = new Uint8Array(BYTES);
export const BASE_POINT_HEX = 'e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76';

/** @param {string} hex */
function hexToBytesUnchecked(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Lowercase hex only (the formats' canonical spelling), exact length.
 * @param {unknown} value
 * @param {number} length bytes
 * @param {string} what
 */
export function hexToBytes(value, length, what) {
  if (typeof value !== 'string') throw new EncodingError(`${what}: expected a hex string, got ${typeof value}`);
  if (!/^[0-9a-f]*$/.test(value) || value.length % 2) {
    throw new EncodingError(`${what}: not lowercase hex`);
  }
  if (value.length !== 2 * length) {
    throw new EncodingError(`${what}: expected ${length} bytes, got ${value.length / 2}`);
  }
  return hexToBytesUnchecked(value);
}

/** @param {Uint8Array} bytes */
export function bytesToHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** @param {Uint8Array} x */
export function isZero(x) {
  let acc = 0;
  for (const b of x) acc |= b;
  return acc === 0;
}

/**
 * The checks of a ristretto255 encoding that libsodium's operations do not make: the
 * length, and the top bit (RFC 9496 §4.3.1 wants it clear; some libsodium builds ignore it).
 * @param {Uint8Array} x
 * @param {string} what
 */
export function checkEncoding(x, what) {
  if (x.length !== BYTES) throw new EncodingError(`${what}: expected ${BYTES} bytes, got ${x.length}`);
  if (x[BYTES - 1] & 0x80) throw new EncodingError(`${what}: not a canonical ristretto255 encoding (top bit set)`);
  return x;
}

/**
 * Validate a canonical ristretto255 encoding (RFC 9496 §4.3.1; the identity is allowed).
 * @param {Uint8Array} x
 * @param {string} what
 */
export function checkElement(x, what) {
  checkEncoding(x, what);
  if (!isZero(x) && !lib().crypto_core_ristretto255_is_valid_point(x)) {
    throw new EncodingError(`${what}: not a canonical ristretto255 encoding`);
  }
  return x;
}

/**
 * A scalar: 32 bytes little-endian, reduced mod L.
 * @param {unknown} value hex string
 * @param {string} what
 */
export function scalarFromHex(value, what) {
  const k = hexToBytes(value, BYTES, what);
  for (let i = BYTES - 1; i >= 0; i--) {
    if (k[i] < L_LE[i]) return k;
    if (k[i] > L_LE[i]) break;
  }
  throw new EncodingError(`${what}: scalar is not reduced mod L (non-canonical encoding)`);
}

/**
 * k·x (the identity when the product is the identity, as the Python SDK does).
 * @param {Uint8Array} k
 * @param {Uint8Array} x
 */
export function mul(k, x) {
  if (isZero(x) || isZero(k)) return new Uint8Array(BYTES);
  try {
    return lib().crypto_scalarmult_ristretto255(k, x);
  } catch {
    // libsodium refuses an invalid point, and also a product that is the identity
    if (!lib().crypto_core_ristretto255_is_valid_point(x)) {
      throw new EncodingError('not a canonical ristretto255 encoding');
    }
    return new Uint8Array(BYTES);
  }
}

/** @param {Uint8Array} k */
export function mulBase(k) {
  if (isZero(k)) return new Uint8Array(BYTES);
  try {
    return lib().crypto_scalarmult_ristretto255_base(k);
  } catch {
    return new Uint8Array(BYTES);
  }
}

/** @param {Uint8Array} x @param {Uint8Array} y */
export function add(x, y) {
  return lib().crypto_core_ristretto255_add(x, y);
}

/** @param {Uint8Array} x @param {Uint8Array} y */
export function sub(x, y) {
  return lib().crypto_core_ristretto255_sub(x, y);
}

/** Constant-time-enough equality of two public byte strings. @param {Uint8Array} x @param {Uint8Array} y */
export function equal(x, y) {
  if (x.length !== y.length) return false;
  let acc = 0;
  for (let i = 0; i < x.length; i++) acc |= x[i] ^ y[i];
  return acc === 0;
}

/** @param {Uint8Array[]} parts */
export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** @param {Uint8Array} data */
export function sha256(data) {
  return lib().crypto_hash_sha256(data);
}

/**
 * A big-endian byte string mod a small positive integer.
 * @param {Uint8Array} bytes
 * @param {number} k
 */
export function bigEndianMod(bytes, k) {
  let r = 0;
  for (const b of bytes) r = (r * 256 + b) % k;
  return r;
}
