// A small client for the Open Inference Protocol v2 REST endpoint of an EncryIP runtime
// (`encryip serve ... --http-port N`), on the standard `fetch`. It sends raw uint8 pixels
// and returns the confused labels (the BYTES output "ciphertext") as Uint8Arrays; decrypt
// them locally with `decrypt(ct, key)`.
import { EncodingError, RemoteError } from './errors.js';
import { hexToBytes } from './ristretto.js';

export const CIPHERTEXT_OUTPUT = 'ciphertext';

/**
 * Decode a v2 BYTES output tensor (JSON form: lowercase hex strings, one per row) into
 * ciphertext bytes; `width` (bytes per ciphertext) is checked when given.
 * @param {{name?: string, datatype?: string, data?: unknown}} output
 * @param {number} [width]
 * @returns {Uint8Array[]}
 */
export function bytesOutput(output, width) {
  if (output?.datatype !== 'BYTES') {
    throw new EncodingError(`output ${JSON.stringify(output?.name)}: expected datatype BYTES, got ${JSON.stringify(output?.datatype)}`);
  }
  if (!Array.isArray(output.data)) throw new EncodingError(`output ${JSON.stringify(output.name)}: expected a data array`);
  return output.data.map((v, i) => {
    if (typeof v !== 'string') throw new EncodingError(`output row ${i}: expected a hex string`);
    return hexToBytes(v, width ?? v.length / 2, `output row ${i}`);
  });
}

export class RestClient {
  /**
   * @param {string} baseUrl e.g. "http://127.0.0.1:8000"
   * @param {{token?: string, model?: string, timeoutMs?: number, fetch?: typeof fetch}} [options]
   */
  constructor(baseUrl, options = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.model = options.model ?? 'encryip';
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? 30000;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** @param {string} path @param {RequestInit} [init] */
  async #call(path, init = {}) {
    const url = this.baseUrl + path;
    const headers = new Headers(init.headers);
    if (this.token) headers.set('Authorization', `Bearer ${this.token}`);
    const resp = await this.fetch(url, { ...init, headers, signal: AbortSignal.timeout(this.timeoutMs) });
    const text = await resp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!resp.ok) throw new RemoteError(resp.status, body?.error ?? text, url);
    return body;
  }

  /** Server liveness/readiness (`/v2/health/ready`). */
  async ready() {
    const url = `${this.baseUrl}/v2/health/ready`;
    const resp = await this.fetch(url, { signal: AbortSignal.timeout(this.timeoutMs) });
    return resp.ok;
  }

  /** The model's metadata (`GET /v2/models/{model}`). */
  async metadata() {
    return this.#call(`/v2/models/${encodeURIComponent(this.model)}`);
  }

  /**
   * Confused labels for a batch of raw uint8 images.
   * @param {Uint8Array | number[]} pixels flat, row-major [N, C, H, W]
   * @param {number[]} shape [N, C, H, W]
   * @param {{inputName?: string}} [options]
   * @returns {Promise<Uint8Array[]>} one wire ciphertext per row
   */
  async predict(pixels, shape, options = {}) {
    const inputName = options.inputName ?? (await this.#inputName());
    const body = {
      inputs: [{ name: inputName, shape, datatype: 'UINT8', data: Array.from(pixels) }],
      outputs: [{ name: CIPHERTEXT_OUTPUT }],
    };
    const resp = await this.#call(`/v2/models/${encodeURIComponent(this.model)}/infer`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const out = (resp?.outputs ?? []).find((/** @type {any} */ o) => o.name === CIPHERTEXT_OUTPUT);
    if (!out) throw new EncodingError(`response has no ${CIPHERTEXT_OUTPUT} output`);
    return bytesOutput(out);
  }

  /** @type {string | undefined} */
  #input;

  async #inputName() {
    if (this.#input === undefined) {
      const meta = await this.metadata();
      this.#input = meta?.inputs?.[0]?.name ?? 'input';
    }
    return /** @type {string} */ (this.#input);
  }
}
