// The browser demo: key file + image -> the server's REST endpoint -> decrypted label.
// Query parameters (?server=&model=&key=URL&image=URL&auto=1) drive it without clicks
// (the headless-Chromium test uses them, with &report=URL to get the result back); the key
// is fetched by this page only and never sent anywhere.
import { RestClient, checkKeyMatches, decrypt, loadKey, ready } from '../src/index.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);
for (const name of ['server', 'model', 'token']) if (params.has(name)) $(name).value = params.get(name) ?? '';

/** @param {Blob} blob @param {number[]} shape [C, H, W] -> uint8 pixels, NCHW with N = 1 */
async function pixelsOf(blob, shape) {
  const [c, h, w] = shape;
  const bitmap = await createImageBitmap(blob);
  const canvas = new OffscreenCanvas(w, h);
  const ctx = /** @type {OffscreenCanvasRenderingContext2D} */ (canvas.getContext('2d'));
  ctx.drawImage(bitmap, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const out = new Uint8Array(c * h * w);
  for (let i = 0; i < h * w; i++) {
    if (c === 1) out[i] = Math.round((rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3);
    else for (let k = 0; k < c; k++) out[k * h * w + i] = rgba[4 * i + k];
  }
  return out;
}

async function keyText() {
  if (params.has('key')) return (await fetch(/** @type {string} */ (params.get('key')))).text();
  const file = $('keyfile').files?.[0];
  if (!file) throw new Error('choose your key file');
  return file.text();
}

async function imageBlob() {
  if (params.has('image')) return (await fetch(/** @type {string} */ (params.get('image')))).blob();
  const file = $('image').files?.[0];
  if (!file) throw new Error('choose an image');
  return file;
}

async function run() {
  $('error').textContent = '';
  $('label').textContent = '…';
  try {
    await ready();
    const key = loadKey(await keyText(), { source: 'key file' });
    const client = new RestClient($('server').value, { model: $('model').value, token: $('token').value || undefined });
    const meta = await client.metadata();
    const input = meta.inputs[0];
    const shape = input.shape.slice(1).map(Number);
    if (meta.parameters?.pk_fingerprint) checkKeyMatches(key, meta.parameters.pk_fingerprint);
    const pixels = await pixelsOf(await imageBlob(), shape);
    const [ct] = await client.predict(pixels, [1, ...shape], { inputName: input.name });
    const label = decrypt(ct, key);
    $('label').textContent = String(label);
    $('classname').textContent = key.classNames[label] !== String(label) ? `(${key.classNames[label]})` : '';
    $('details').textContent = `licensee ${key.licensee}; ciphertext ${ct.length} bytes; model ${meta.name}`;
    document.title = `label=${label}`;
    await report({ label, licensee: key.licensee, details: $('details').textContent, error: null });
  } catch (e) {
    const err = /** @type {Error} */ (e);
    $('label').textContent = '–';
    $('error').textContent = String(err?.message ?? e);
    document.title = `error=${err?.name ?? 'Error'}`;
    await report({ label: null, error: `${err?.name}: ${err?.message}` });
  }
}

/** ?report=URL (tests): POST what the page shows there as JSON. @param {object} result */
async function report(result) {
  const to = params.get('report');
  if (to) await fetch(to, { method: 'POST', body: JSON.stringify(result) });
}

$('go').addEventListener('click', run);
if (params.get('auto') === '1') run();
