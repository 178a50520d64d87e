// Runs every conformance vector in ../../vectors (written by scripts/gen_vectors.py from the
// Python implementation): the JavaScript SDK must agree with Python on each one.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as sdk from '../src/index.js';
import { hexToBytes } from '../src/ristretto.js';

const here = dirname(fileURLToPath(import.meta.url));
const dir = process.env.ENCRYIP_VECTORS ?? join(here, '..', '..', '..', 'vectors');
const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
await sdk.ready();

/** @param {() => unknown} fn @param {string | null} name */
function expectError(fn, name) {
  if (name === null) {
    fn();
    return;
  }
  assert.throws(fn, (e) => {
    assert.equal(e?.constructor?.name, name, `expected ${name}, got ${e?.constructor?.name}: ${e?.message}`);
    return true;
  });
}

test('there are vector files', () => assert.ok(files.length > 0, `no vectors in ${dir}`));

for (const file of files) {
  const doc = JSON.parse(readFileSync(join(dir, file), 'utf8'));
  const keys = Object.fromEntries(Object.entries(doc.keys).map(([n, k]) => [n, sdk.loadKey(k, { source: n })]));

  test(`${file}: keys load, fingerprints`, () => {
    for (const [name, key] of Object.entries(keys)) {
      assert.equal(key.pkFingerprint, doc.pk_fingerprints[name], name);
      assert.equal(key.licensee, doc.keys[name].licensee);
    }
  });

  test(`${file}: ${doc.decrypt.length} ciphertexts decrypt as in Python`, () => {
    let n = 0;
    for (const v of doc.decrypt) {
      assert.equal(sdk.decrypt(v.ciphertext, keys[v.key]), v.label, `${v.key} ${v.kind}`);
      assert.equal(sdk.decrypt(hexToBytes(v.ciphertext, v.ciphertext.length / 2, 'ct'), keys[v.key]), v.label);
      n++;
    }
    assert.equal(n, doc.decrypt.length);
    // the batch form agrees with the single form
    const acme = doc.decrypt.filter((v) => v.key === 'acme');
    assert.deepEqual(sdk.decryptBatch(acme.map((v) => v.ciphertext), keys.acme), acme.map((v) => v.label));
  });

  test(`${file}: ${doc.invalid_keys.length} invalid keys are refused with Python's error class`, () => {
    for (const v of doc.invalid_keys) expectError(() => sdk.loadKey(v.key), v.error);
  });

  test(`${file}: ${doc.invalid_ciphertexts.length} invalid ciphertexts are refused`, () => {
    for (const v of doc.invalid_ciphertexts) expectError(() => sdk.decrypt(v.ciphertext, keys[v.key]), v.error);
  });

  test(`${file}: keys against manifests`, () => {
    for (const v of doc.key_manifest) {
      expectError(() => sdk.checkKeyMatches(keys[v.key], doc.manifests[v.manifest]), v.error);
    }
  });

  test(`${file}: label rule edge cases`, () => {
    for (const v of doc.label_rule) {
      const m = hexToBytes(v.message, 32, 'message');
      assert.equal(sdk.labelOf(m, v.num_classes), v.label, `${v.what} K=${v.num_classes}`);
    }
    for (const v of doc.label_table ?? []) {
      const m = hexToBytes(v.message, 32, 'message');
      assert.equal(sdk.labelOfV2(m, keys[v.key]), v.label, v.what);
    }
  });
}
