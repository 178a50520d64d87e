#!/usr/bin/env node
// Predict remotely, decrypt locally, from Node:
//
//   node examples/predict.js --server http://127.0.0.1:8000 --key acme.key --npy digits.npy \
//        [--model encryip] [--token T]
//
// digits.npy: uint8 [N, C, H, W] (numpy's .npy format). Prints one JSON line:
// {"licensee": ..., "labels": [...], "class_names": [...]}.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { RestClient, checkKeyMatches, decryptBatch, loadKey, ready } from '../src/index.js';

/** Minimal .npy reader for C-ordered uint8 arrays. @param {Uint8Array} buf */
export function readNpyUint8(buf) {
  const magic = String.fromCharCode(...buf.subarray(1, 6));
  if (buf[0] !== 0x93 || magic !== 'NUMPY') throw new Error('not a .npy file');
  const major = buf[6];
  const headerLen = major === 1 ? buf[8] | (buf[9] << 8) : buf[8] | (buf[9] << 8) | (buf[10] << 16) | (buf[11] << 24);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(buf.subarray(start, start + headerLen));
  if (!/'descr':\s*'\|u1'/.test(header)) throw new Error(`expected a uint8 array, header ${header.trim()}`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error('expected a C-ordered array');
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  return { shape, data: buf.subarray(start + headerLen) };
}

async function main() {
  const { values } = parseArgs({
    options: {
      server: { type: 'string', default: 'http://127.0.0.1:8000' },
      key: { type: 'string' },
      npy: { type: 'string' },
      model: { type: 'string', default: 'encryip' },
      token: { type: 'string' },
    },
  });
  if (!values.key || !values.npy) throw new Error('--key and --npy are required');
  await ready();
  const key = loadKey(readFileSync(values.key, 'utf8'), { source: values.key });
  const client = new RestClient(values.server, { model: values.model, token: values.token });
  const meta = await client.metadata();
  if (meta.parameters?.pk_fingerprint) checkKeyMatches(key, meta.parameters.pk_fingerprint);
  const { shape, data } = readNpyUint8(new Uint8Array(readFileSync(values.npy)));
  const cts = await client.predict(data, shape, { inputName: meta.inputs[0].name });
  const labels = decryptBatch(cts, key);
  console.log(JSON.stringify({ licensee: key.licensee, labels, class_names: labels.map((y) => key.classNames[y]) }));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(`error: ${e.name}: ${e.message}`);
    process.exit(1);
  });
}
