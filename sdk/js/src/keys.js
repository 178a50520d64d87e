// Licensee key files and manifests: strict validation, the key check g1^a·g2^b = h,
// public-key fingerprints. Mirrors encryip_runtime/formats/{keyfile,manifest,common}.py.
import { EncodingError, FormatError, InvalidKeyError } from './errors.js';
import {
  BASE_POINT_HEX,
  GROUP_NAME,
  add,
  bytesToHex,
  checkElement,
  concat,
  equal,
  hexToBytes,
  mul,
  mulBase,
  scalarFromHex,
  sha256,
  BYTES,
} from './ristretto.js';

const TEXT = new TextEncoder();
export const KEY_FORMATS = ['encryip-key/1'];
export const MANIFEST_FORMATS = ['encryip-manifest/1'];

/**
 * @typedef {object} PublicKey
 * @property {Uint8Array} g1
 * @property {Uint8Array} g2
 * @property {Uint8Array} h
 */

/**
 * @typedef {object} LicenseeKey
 * @property {string} format
 * @property {string} licensee
 * @property {number} numClasses
 * @property {string[]} classNames
 * @property {PublicKey} pk
 * @property {string} pkFingerprint  hex SHA-256, as `encryip predict --json` prints it
 * @property {string} manifestDigest
 * @property {{a: Uint8Array, b: Uint8Array}} sk
 * @property {number} ciphertextSize  bytes per wire ciphertext
 */

/** @param {unknown} value @returns {Record<string, unknown>} */
function parseDocument(value, source) {
  let doc = value;
  if (typeof value === 'string') {
    try {
      doc = JSON.parse(value);
    } catch (e) {
      throw new FormatError(`not valid JSON (${/** @type {Error} */ (e).message})`, { source });
    }
  } else if (value instanceof Uint8Array) {
    return parseDocument(new TextDecoder().decode(value), source);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new FormatError('expected a JSON object', { source });
  }
  return /** @type {Record<string, unknown>} */ (doc);
}

/** Field access that names the field in every error. */
class Fields {
  /** @param {Record<string, unknown>} obj @param {string} source @param {string} [prefix] */
  constructor(obj, source, prefix = '') {
    this.obj = obj;
    this.source = source;
    this.prefix = prefix;
  }
  /** @param {string} key */
  path(key) {
    return this.prefix ? `${this.prefix}.${key}` : key;
  }
  /** @param {string} key @param {string} message */
  error(key, message) {
    return new FormatError(message, { field: this.path(key), source: this.source });
  }
  /** @param {string} key */
  has(key) {
    return Object.prototype.hasOwnProperty.call(this.obj, key);
  }
  /** @param {string} key */
  get(key) {
    if (!this.has(key)) throw this.error(key, 'missing');
    return this.obj[key];
  }
  /** @param {string} key @returns {string} */
  str(key) {
    const v = this.get(key);
    if (typeof v !== 'string') throw this.error(key, `expected a string, got ${typeof v}`);
    return v;
  }
  /** @param {string} key @param {number} lo @param {number} hi */
  int(key, lo, hi) {
    const v = this.get(key);
    if (typeof v !== 'number' || !Number.isInteger(v)) throw this.error(key, 'expected an integer');
    if (v < lo || v > hi) throw this.error(key, `must lie in [${lo}, ${hi}]`);
    return v;
  }
  /** @param {string} key */
  obj_(key) {
    const v = this.get(key);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw this.error(key, 'expected an object');
    return new Fields(/** @type {Record<string, unknown>} */ (v), this.source, this.path(key));
  }
  /** @template T @param {string} key @param {(v: unknown) => T} parse */
  parse(key, parse) {
    try {
      return parse(this.get(key));
    } catch (e) {
      // As in Python: a bad encoding inside a file is a FormatError naming the field.
      if (e instanceof EncodingError) throw this.error(key, e.message);
      throw e;
    }
  }
}

/** @param {Fields} f @param {string} name */
function element(f, name) {
  return f.parse(name, (v) => checkElement(hexToBytes(v, BYTES, name), name));
}

/** @param {Fields} f */
function publicKey(f) {
  const pf = f.obj_('pk');
  const pk = { g1: element(pf, 'g1'), g2: element(pf, 'g2'), h: element(pf, 'h') };
  if (bytesToHex(pk.g1) !== BASE_POINT_HEX) throw pf.error('g1', `must be the generator of ${GROUP_NAME}`);
  for (const name of /** @type {const} */ (['g2', 'h'])) {
    if (pk[name].every((b) => b === 0)) throw pf.error(name, 'must not be the identity');
  }
  return pk;
}

/** @param {Fields} f */
function checkScheme(f) {
  const profile = f.str('profile');
  if (profile !== 'secure') {
    throw f.error('profile', `${JSON.stringify(profile)} is not supported by the JavaScript SDK (secure profile only)`);
  }
  if (f.has('group') && f.str('group') !== GROUP_NAME) {
    throw f.error('group', `${JSON.stringify(f.str('group'))} does not match profile secure (expected "${GROUP_NAME}")`);
  }
  return f.int('num_classes', 2, 65000);
}

/**
 * SHA-256 over the group name and the public key's elements: the fingerprint that
 * `encryip predict --json` and key files carry.
 * @param {PublicKey} pk
 */
export function pkFingerprint(pk) {
  const head = concat(TEXT.encode('encryip/v1/pk\0'), TEXT.encode(GROUP_NAME), new Uint8Array([0]));
  return bytesToHex(sha256(concat(head, pk.g1, pk.g2, pk.h)));
}

/** @param {Fields} f @param {number} k */
function classNames(f, k) {
  if (!f.has('class_names')) return Array.from({ length: k }, (_, i) => String(i));
  const v = f.get('class_names');
  if (!Array.isArray(v) || v.length !== k || !v.every((s) => typeof s === 'string')) {
    throw f.error('class_names', `expected a list of ${k} strings`);
  }
  return /** @type {string[]} */ (v);
}

/** @param {Fields} f @param {string} key */
function optionalDigest(f, key) {
  if (!f.has(key)) return '';
  const v = f.str(key);
  if (v && !/^[0-9a-f]{64}$/.test(v)) throw f.error(key, 'expected 64 lowercase hex digits (a SHA-256 digest)');
  return v;
}

/**
 * Load and validate a licensee key file (its JSON text, bytes or parsed object).
 * Checks every encoding, then g1^a·g2^b = h: a corrupted or foreign key fails here.
 * @param {string | Uint8Array | object} json
 * @param {{source?: string}} [options]
 * @returns {LicenseeKey}
 */
export function loadKey(json, options = {}) {
  const source = options.source ?? 'key';
  const f = new Fields(parseDocument(json, source), source);
  const format = f.str('format');
  if (!KEY_FORMATS.includes(format)) {
    throw f.error('format', `expected one of ${KEY_FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
  }
  const numClasses = checkScheme(f);
  const pk = publicKey(f);
  const fingerprint = pkFingerprint(pk);
  if (f.has('pk_fingerprint') && f.str('pk_fingerprint') !== fingerprint) {
    throw f.error('pk_fingerprint', 'does not match pk');
  }
  const sf = f.obj_('sk');
  const sk = { a: sf.parse('a', (v) => scalarFromHex(v, 'a')), b: sf.parse('b', (v) => scalarFromHex(v, 'b')) };
  const lhs = add(mulBase(sk.a), mul(sk.b, pk.g2));
  if (!equal(lhs, pk.h)) {
    throw new InvalidKeyError(`${source}: field 'sk': secret key does not match the public key (g1^a * g2^b != h)`);
  }
  return {
    format,
    licensee: f.str('licensee'),
    numClasses,
    classNames: classNames(f, numClasses),
    pk,
    pkFingerprint: fingerprint,
    manifestDigest: optionalDigest(f, 'manifest_digest'),
    sk,
    ciphertextSize: 3 * BYTES,
  };
}

/**
 * Check that `key` belongs to the public key of a manifest (or of a server's model
 * metadata / `predict --json` output carrying `pk_fingerprint`); raise InvalidKeyError if not.
 * @param {LicenseeKey} key
 * @param {string | object} manifestOrFingerprint manifest JSON/object, or a hex fingerprint
 */
export function checkKeyMatches(key, manifestOrFingerprint) {
  let want;
  if (typeof manifestOrFingerprint === 'string' && /^[0-9a-f]{64}$/.test(manifestOrFingerprint)) {
    want = manifestOrFingerprint;
  } else {
    const f = new Fields(parseDocument(manifestOrFingerprint, 'manifest'), 'manifest');
    if (f.has('pk')) want = pkFingerprint(publicKey(f));
    else want = f.str('pk_fingerprint');
  }
  if (want !== key.pkFingerprint) {
    throw new InvalidKeyError(
      `this key (licensee ${JSON.stringify(key.licensee)}) does not belong to that public key: ` +
        `it cannot decrypt these predictions (key pk fingerprint ${key.pkFingerprint.slice(0, 16)}…)`,
    );
  }
}
