// EncryIP licensee SDK for JavaScript (Node 18+ and browsers, no build step).
//
//   import { ready, loadKey, decrypt, RestClient } from 'encryip-client';
//   await ready();
//   const key = loadKey(await (await fetch('acme.key')).text());
//   const client = new RestClient('http://127.0.0.1:8000', { token });
//   const preds = await client.predict(pixels, [1, 1, 28, 28]);   // uint8 NCHW
//   const labels = preds.map((c) => decrypt(c, key));
//
// The key never leaves this process: only the image goes to the server.
export { ready } from './ristretto.js';
export { EncryIPError, EncodingError, FormatError, InvalidKeyError, RemoteError } from './errors.js';
export { loadKey, checkKeyMatches, pkFingerprint, KEY_FORMATS } from './keys.js';
export { decrypt, decryptBatch, labelOf, labelOfV2 } from './decrypt.js';
export { RestClient, bytesOutput } from './rest.js';
