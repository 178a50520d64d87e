// Error classes, named as in the Python SDK (encryip_runtime.exceptions), so that the
// conformance vectors can say which one an invalid input must raise.

/** Base class of every error raised on purpose by this package. */
export class EncryIPError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bytes or numbers that are not a valid encoding (wrong length, non-canonical, off-group). */
export class EncodingError extends EncryIPError {}

/** A secret key that does not match its public key, or a key of another public key. */
export class InvalidKeyError extends EncryIPError {}

/** A release file (manifest, key) that fails validation; `field` names the JSON path. */
export class FormatError extends EncryIPError {
  /**
   * @param {string} message
   * @param {{field?: string, source?: string}} [where]
   */
  constructor(message, where = {}) {
    const prefix = (where.source ? `${where.source}: ` : '') + (where.field ? `field '${where.field}': ` : '');
    super(prefix + message);
    /** @type {string | undefined} */
    this.field = where.field;
  }
}

/** The server answered with an error (HTTP status and the OIP `{"error": ...}` text). */
export class RemoteError extends EncryIPError {
  /**
   * @param {number} status
   * @param {string} details
   * @param {string} url
   */
  constructor(status, details, url) {
    super(`${url}: HTTP ${status}: ${details}`);
    this.status = status;
    this.details = details;
    this.url = url;
  }
}
