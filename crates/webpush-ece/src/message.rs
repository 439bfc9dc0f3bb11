//! Decrypting an FCM data message: choosing the encoding from its app data.

use crate::{Error, ReceiverKeys, aes128gcm, aesgcm};

/// The two Web Push content encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentEncoding {
    /// RFC 8291 / RFC 8188: parameters in a binary header inside the body.
    Aes128Gcm,
    /// draft-ietf-webpush-encryption-04: parameters in `crypto-key` and `encryption`.
    AesGcm,
}

impl ContentEncoding {
    /// The token of the `Content-Encoding` header: `aes128gcm` or `aesgcm`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes128Gcm => "aes128gcm",
            Self::AesGcm => "aesgcm",
        }
    }
}

impl core::fmt::Display for ContentEncoding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`decrypt_message`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// The message was encrypted, and this is its plaintext.
    Decrypted {
        /// The encoding it was encrypted with.
        encoding: ContentEncoding,
        /// The plaintext.
        plaintext: Vec<u8>,
    },
    /// The message carries no encryption parameters: its `raw_data` and `app_data` are the
    /// message as sent (Android-style messages, `deleted_messages` notices).
    NotEncrypted,
}

/// Decrypts the `raw_data` of an FCM data message according to its `app_data`.
///
/// - `content-encoding: aes128gcm` → [`aes128gcm::decrypt`];
/// - `content-encoding: aesgcm`, or a `crypto-key` or `encryption` entry → [`aesgcm`], which
///   needs both entries ([`Error::MissingParameter`] names a missing one);
/// - none of these → [`Payload::NotEncrypted`];
/// - another `content-encoding` → [`Error::UnsupportedContentEncoding`].
///
/// Keys are matched without regard to ASCII case; the first occurrence of a key wins.
///
/// ```
/// use webpush_ece::{EncryptOptions, Payload, ReceiverKeys, aesgcm, decrypt_message};
///
/// let keys = ReceiverKeys::generate();
/// let msg = aesgcm::encrypt(&keys.subscription_keys(), b"hello", &EncryptOptions::new())?;
/// let app_data = [
///     ("crypto-key", msg.crypto_key_header()),
///     ("encryption", msg.encryption_header()),
///     ("subtype", "wp:https://example.com/#".to_owned()),
/// ];
/// match decrypt_message(&keys, app_data, &msg.ciphertext)? {
///     Payload::Decrypted { plaintext, .. } => assert_eq!(plaintext, b"hello"),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(decrypt_message(&keys, [("from", "x")], b"raw")?, Payload::NotEncrypted);
/// # Ok::<(), webpush_ece::Error>(())
/// ```
pub fn decrypt_message<I, K, V>(
    keys: &ReceiverKeys,
    app_data: I,
    raw_data: &[u8],
) -> Result<Payload, Error>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let (mut content_encoding, mut crypto_key, mut encryption) = (None, None, None);
    for (key, value) in app_data {
        let key = key.as_ref();
        let slot = if key.eq_ignore_ascii_case("content-encoding") {
            &mut content_encoding
        } else if key.eq_ignore_ascii_case("crypto-key") {
            &mut crypto_key
        } else if key.eq_ignore_ascii_case("encryption") {
            &mut encryption
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    let encoding = match content_encoding.as_ref().map(|v| v.as_ref().trim()) {
        Some(v) if v.eq_ignore_ascii_case("aes128gcm") => ContentEncoding::Aes128Gcm,
        Some(v) if v.eq_ignore_ascii_case("aesgcm") => ContentEncoding::AesGcm,
        Some(other) => return Err(Error::UnsupportedContentEncoding(other.to_owned())),
        None if crypto_key.is_some() || encryption.is_some() => ContentEncoding::AesGcm,
        None => return Ok(Payload::NotEncrypted),
    };
    let plaintext = match encoding {
        ContentEncoding::Aes128Gcm => aes128gcm::decrypt(keys, raw_data)?,
        ContentEncoding::AesGcm => {
            let crypto_key = crypto_key.ok_or(Error::MissingParameter("crypto-key"))?;
            let encryption = encryption.ok_or(Error::MissingParameter("encryption"))?;
            aesgcm::decrypt_headers(keys, crypto_key.as_ref(), encryption.as_ref(), raw_data)?
        }
    };
    Ok(Payload::Decrypted {
        encoding,
        plaintext,
    })
}
