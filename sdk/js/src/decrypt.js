// Decrypt confused labels: Dec(sk, c) = u3 − (a·u1 + b·u2), then the label rule
// label(M) = SHA-256("encryip/v1/label" ‖ M) as a big-endian integer mod K.
// Every element decodes to a label (a wrong key gives wrong labels, never an error), so
// no decryption reveals whether a ciphertext is a trigger.
import { EncodingError } from './errors.js';
import { BYTES, add, bigEndianMod, bytesToHex, checkElement, concat, hexToBytes, mul, sha256, sub } from './ristretto.js';

const LABEL_DOMAIN = new TextEncoder().encode('encryip/v1/label');

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
    const u = [0, 1, 2].map((k) => checkElement(c.subarray(k * BYTES, (k + 1) * BYTES), `${what}: element ${k}`));
    const mask = add(mul(key.sk.a, u[0]), mul(key.sk.b, u[1]));
    out.push(labelOf(sub(u[2], mask), key.numClasses));
    i++;
  }
  return out;
}

export { bytesToHex };
