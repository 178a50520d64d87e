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
export const KEY_FORMATS = ['encryip-key/1', 'encryip-key/2'];
const MAX_TABLE = 1 << 24;

/**
 * @typedef {object} PublicKey
 * @property {Uint8Array[]} g  generators g_1 (the base point), g_2, … (format 1: g_1, g_2)
 * @property {Uint8Array} h
 */

/**
 * Format 2's decoding state: message index i is M_0 + i·h for i in [indexMin, indexMax).
 * @typedef {object} LabelTable
 * @property {Uint8Array} m0
 * @property {number} indexMin
 * @property {number} indexMax
 * @property {Map<bigint, number> | null} [map]  first 8 bytes (little-endian) -> index, built on first use
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
 * @property {{a: Uint8Array, b: Uint8Array[]}} sk  format 1: one b scalar; format 2: n small b_i
 * @property {number} version  the key format's version (1 or 2)
 * @property {number} ciphertextSize  bytes per wire ciphertext: (n + 2) x 32
 * @property {LabelTable | null} labels  format 2 only
 * @property {number[][] | null} [smallPlan]  format 2: how Σ b_i·u_i is computed (cached)
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

/** @param {Uint8Array} x */
function isIdentity(x) {
  return x.every((b) => b === 0);
}

/**
 * Format 1: pk {g1, g2, h}. Format 2: pk {g: [g_1 … g_{n+1}], h}.
 * @param {Fields} f @param {number} version @param {number} width
 * @returns {PublicKey}
 */
function publicKey(f, version, width = 1) {
  const pf = f.obj_('pk');
  /** @type {Uint8Array[]} */
  let g;
  if (version === 1) {
    g = [element(pf, 'g1'), element(pf, 'g2')];
  } else {
    const list = pf.get('g');
    if (!Array.isArray(list) || list.length !== width + 1) {
      throw pf.error('g', `expected ${width + 1} generators`);
    }
    g = list.map((v, i) => pf.parse('g', () => checkElement(hexToBytes(v, BYTES, `g[${i}]`), `g[${i}]`)));
  }
  const h = element(pf, 'h');
  const g1name = version === 1 ? 'g1' : 'g[0]';
  if (bytesToHex(g[0]) !== BASE_POINT_HEX) throw pf.error(g1name, `must be the generator of ${GROUP_NAME}`);
  g.forEach((gi, i) => {
    if (isIdentity(gi)) throw pf.error(version === 1 ? 'g2' : `g[${i}]`, 'must not be the identity');
  });
  if (new Set(g.map(bytesToHex)).size !== g.length) throw pf.error('g', 'generators must be distinct');
  if (isIdentity(h)) throw pf.error('h', 'must not be the identity');
  return { g, h };
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
 * @param {number} [version] the key/manifest format (format 2 has its own domain)
 */
export function pkFingerprint(pk, version) {
  const domain = version === 1 ? 'encryip/v1/pk\0' : 'encryip/v2/pk\0';
  const head = concat(TEXT.encode(domain), TEXT.encode(GROUP_NAME), new Uint8Array([0]));
  return bytesToHex(sha256(concat(head, ...pk.g, pk.h)));
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

/** Format 2's `scheme` object: {width, shift_range, ciphertext_size}. @param {Fields} f */
function schemeV2(f) {
  const sf = f.obj_('scheme');
  const width = sf.int('width', 1, 32);
  sf.int('shift_range', 1, 1 << 20);
  const size = (width + 2) * BYTES;
  if (sf.has('ciphertext_size') && sf.int('ciphertext_size', 0, 1 << 20) !== size) {
    throw sf.error('ciphertext_size', `expected (width + 2) x 32 = ${size}`);
  }
  return width;
}

/** @param {Fields} f @param {number} k @returns {LabelTable} */
function labelTable(f, k) {
  const lf = f.obj_('labels');
  const m0 = element(lf, 'm0');
  const indexMin = lf.int('index_min', -MAX_TABLE, 0);
  const indexMax = lf.int('index_max', k, MAX_TABLE);
  if (indexMin % k || indexMax % k) throw lf.error('index_min', `index_min and index_max must be multiples of K = ${k}`);
  if (indexMax - indexMin > MAX_TABLE) throw lf.error('index_max', 'table larger than 2^24 entries');
  return { m0, indexMin, indexMax, map: null };
}

/** A small non-negative integer as a 32-byte little-endian scalar. @param {number} v */
export function smallScalar(v) {
  const out = new Uint8Array(BYTES);
  let x = v;
  for (let i = 0; x > 0; i++, x = Math.floor(x / 256)) out[i] = x % 256;
  return out;
}

/**
 * Load and validate a licensee key file (its JSON text, bytes or parsed object), format 1
 * or 2. Checks every encoding, then the key equation (format 1: a·g1 + b·g2 = h; format 2:
 * a·g_1 + Σ b_i·g_{i+1} = h): a corrupted or foreign key fails here.
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
  const version = format === 'encryip-key/2' ? 2 : 1;
  const numClasses = checkScheme(f);
  const width = version === 2 ? schemeV2(f) : 1;
  const pk = publicKey(f, version, width);
  const labels = version === 2 ? labelTable(f, numClasses) : null;
  const fingerprint = pkFingerprint(pk, version);
  if (f.has('pk_fingerprint') && f.str('pk_fingerprint') !== fingerprint) {
    throw f.error('pk_fingerprint', 'does not match pk');
  }
  const sf = f.obj_('sk');
  const a = sf.parse('a', (v) => scalarFromHex(v, 'a'));
  /** @type {Uint8Array[]} */
  let b;
  if (version === 1) {
    b = [sf.parse('b', (v) => scalarFromHex(v, 'b'))];
  } else {
    const list = sf.get('b');
    if (!Array.isArray(list) || list.length !== width) throw sf.error('b', `expected a list of ${width} integers`);
    b = list.map((v, i) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > numClasses - 1) {
        throw sf.error(`b[${i}]`, `must be an integer in [0, ${numClasses - 1}]`);
      }
      return smallScalar(v);
    });
  }
  let lhs = mulBase(a);
  b.forEach((bi, i) => {
    lhs = add(lhs, mul(bi, pk.g[i + 1]));
  });
  if (!equal(lhs, pk.h)) {
    throw new InvalidKeyError(`${source}: field 'sk': secret key does not match the public key (a·g1 + Σ b_i·g_(i+1) != h)`);
  }
  return {
    format,
    version,
    licensee: f.str('licensee'),
    numClasses,
    classNames: classNames(f, numClasses),
    pk,
    pkFingerprint: fingerprint,
    manifestDigest: optionalDigest(f, 'manifest_digest'),
    sk: { a, b },
    ciphertextSize: (width + 2) * BYTES,
    labels,
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
    if (f.has('pk')) {
      const version = f.has('format') && f.str('format').endsWith('/2') ? 2 : 1;
      want = pkFingerprint(publicKey(f, version, version === 2 ? schemeV2(f) : 1), version);
    } else {
      want = f.str('pk_fingerprint');
    }
  }
  if (want !== key.pkFingerprint) {
    throw new InvalidKeyError(
      `this key (licensee ${JSON.stringify(key.licensee)}) does not belong to that public key: ` +
        `it cannot decrypt these predictions (key pk fingerprint ${key.pkFingerprint.slice(0, 16)}…)`,
    );
  }
}
