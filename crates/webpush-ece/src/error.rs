//! The one error type of this crate.

/// Everything that can go wrong while parsing keys or headers, decrypting or encrypting.
///
/// Every variant is a per-message (or per-key) failure: none of them means the process is in
/// a bad state, and no input makes this crate panic instead of returning one of them. The
/// comments name the matching `ECE_ERROR_*` code of the `ecec` reference library, whose test
/// vectors this crate passes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `aes128gcm` payload is shorter than its header (21 bytes plus the key id length).
    /// (`ECE_ERROR_SHORT_HEADER`)
    #[error("payload is shorter than its aes128gcm header")]
    ShortHeader,
    /// The record size is not a number, or is too small for the encoding: below 18 for
    /// `aes128gcm` (a tag and a delimiter), below 3 for `aesgcm`. (`ECE_ERROR_INVALID_RS`)
    #[error("invalid record size")]
    InvalidRecordSize,
    /// There is no `aesgcm` ciphertext at all. (`ECE_ERROR_ZERO_CIPHERTEXT`; an `aes128gcm`
    /// header with no record is an empty payload instead, see [`crate::aes128gcm`].)
    #[error("no ciphertext")]
    ZeroCiphertext,
    /// A record holds its authentication tag and nothing else: no room for a padding
    /// delimiter or length. (`ECE_ERROR_SHORT_BLOCK`)
    #[error("a record is too short to hold its tag and padding")]
    ShortBlock,
    /// AES-GCM authentication failed: wrong keys or auth secret, or a corrupted record, or
    /// one cut shorter than its 16-byte tag. (`ECE_ERROR_DECRYPT`)
    #[error("authentication tag mismatch (wrong keys or corrupted message)")]
    BadTag,
    /// The padding of a record is invalid: non-zero padding bytes, a padding length longer
    /// than the record (or an `aesgcm` record too short for one), a wrong delimiter, or a
    /// record marked final that is not the last one.
    /// (`ECE_ERROR_DECRYPT_PADDING`)
    #[error("invalid padding")]
    Padding,
    /// The message ends without its final record. (`ECE_ERROR_DECRYPT_TRUNCATED`)
    #[error("message is truncated: the final record is missing")]
    Truncated,
    /// An `aes128gcm` record decrypted to zeros only: it has no padding delimiter.
    /// (`ECE_ERROR_ZERO_PLAINTEXT`)
    #[error("a record has no padding delimiter")]
    ZeroPlaintext,
    /// A public key is not a valid uncompressed P-256 point (65 bytes starting with 4).
    /// (`ECE_ERROR_COMPUTE_SECRET` / `ECE_ERROR_INVALID_PUBLIC_KEY`)
    #[error("invalid P-256 public key")]
    InvalidPublicKey,
    /// A private key is not a valid P-256 scalar, PKCS#8 or SEC1 document.
    /// (`ECE_ERROR_INVALID_PRIVATE_KEY`)
    #[error("invalid P-256 private key")]
    InvalidPrivateKey,
    /// The auth secret is not 16 bytes long. (`ECE_ERROR_INVALID_AUTH_SECRET`)
    #[error("invalid auth secret (expected 16 bytes)")]
    InvalidAuthSecret,
    /// The salt is not valid base64 or not 16 bytes long. (`ECE_ERROR_INVALID_SALT`)
    #[error("invalid salt")]
    InvalidSalt,
    /// The `Crypto-Key` header has no usable `dh` value: none matches the `keyid` of the
    /// `Encryption` header, or it is not valid base64. (`ECE_ERROR_INVALID_DH`)
    #[error("no valid dh parameter in the Crypto-Key header")]
    InvalidDh,
    /// The `Crypto-Key` header is not a valid list of `name=value` parameters.
    /// (`ECE_ERROR_INVALID_CRYPTO_KEY_HEADER`)
    #[error("malformed Crypto-Key header")]
    InvalidCryptoKeyHeader,
    /// The `Encryption` header is not a valid list of `name=value` parameters, or repeats
    /// `salt`, `rs` or `keyid`. (`ECE_ERROR_INVALID_ENCRYPTION_HEADER`)
    #[error("malformed Encryption header")]
    InvalidEncryptionHeader,
    /// A required parameter is absent: `salt` or `dh` in the headers, or the `crypto-key` /
    /// `encryption` entry of a message's app data.
    #[error("missing parameter `{0}`")]
    MissingParameter(&'static str),
    /// A key or secret is not valid base64 (standard or URL-safe, padded or not).
    #[error("invalid base64")]
    InvalidBase64,
    /// The message names a `content-encoding` this crate does not know.
    #[error("unsupported content-encoding {0:?}")]
    UnsupportedContentEncoding(String),
    /// An input is out of the range the primitives accept: a message too long for AES-GCM,
    /// or a key id longer than 255 bytes.
    #[error("input out of range for the cipher (message or key id too long)")]
    Crypto,
}
