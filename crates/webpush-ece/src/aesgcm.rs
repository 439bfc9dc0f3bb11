//! The legacy `aesgcm` content encoding (draft-ietf-webpush-encryption-04), which FCM uses
//! for messages sent through its own APIs.
//!
//! The salt, record size and sender key travel beside the body, in the `Encryption` and
//! `Crypto-Key` values (see [`AesGcmParams`]); the body is a sequence of records:
//!
//! ```text
//! | record: AES-GCM(u16be pad ‖ pad × 0x00 ‖ data) ‖ tag(16) |  each exactly rs + 16 bytes,
//! | ...                                                      |  except the last, which is
//! | last record: shorter than rs + 16                        |  shorter (an empty one if need be)
//! ```

use crate::ec::{Active, Ecdh};
use crate::header::{AesGcmParams, DEFAULT_RS, MIN_AESGCM_RS};
use crate::kdf::{ContentKeys, SALT_LEN, TAG_LEN};
use crate::keys::{PUBLIC_KEY_LEN, ReceiverKeys, SenderKeys, SubscriptionKeys};
use crate::{EncryptOptions, Error, b64};

const PAD_LEN_SIZE: usize = 2;

/// Decrypts an `aesgcm` body with parameters already parsed.
pub fn decrypt(
    keys: &ReceiverKeys,
    params: &AesGcmParams,
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    decrypt_in::<Active>(keys, params, ciphertext)
}

/// [`decrypt`] with the given ECDH implementation.
pub(crate) fn decrypt_in<B: Ecdh>(
    keys: &ReceiverKeys,
    params: &AesGcmParams,
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    if params.rs() < MIN_AESGCM_RS {
        return Err(Error::InvalidRecordSize);
    }
    let salt: &[u8; SALT_LEN] = params.salt().try_into().map_err(|_| Error::InvalidSalt)?;
    let sender_public: &[u8; PUBLIC_KEY_LEN] = params
        .dh()
        .try_into()
        .map_err(|_| Error::InvalidPublicKey)?;
    if ciphertext.is_empty() {
        return Err(Error::ZeroCiphertext);
    }
    let record_len = usize::try_from(params.rs())
        .ok()
        .and_then(|rs| rs.checked_add(TAG_LEN))
        .ok_or(Error::InvalidRecordSize)?;
    // The last record must be short; a body that ends on a record boundary was cut.
    if ciphertext.len().is_multiple_of(record_len) {
        return Err(Error::Truncated);
    }
    let ecdh = B::agree(keys.ec_key(), sender_public)?;
    let content = ContentKeys::aesgcm(&ecdh, keys.auth(), keys.public_key(), sender_public, salt)?;
    decrypt_records(&content, record_len, ciphertext)
}

/// Decrypts an `aesgcm` body given its `Crypto-Key` and `Encryption` values.
///
/// ```
/// use webpush_ece::{EncryptOptions, ReceiverKeys, aesgcm};
///
/// let keys = ReceiverKeys::generate();
/// let msg = aesgcm::encrypt(&keys.subscription_keys(), b"hi", &EncryptOptions::new())?;
/// let plain = aesgcm::decrypt_headers(
///     &keys,
///     &msg.crypto_key_header(),
///     &msg.encryption_header(),
///     &msg.ciphertext,
/// )?;
/// assert_eq!(plain, b"hi");
/// # Ok::<(), webpush_ece::Error>(())
/// ```
pub fn decrypt_headers(
    keys: &ReceiverKeys,
    crypto_key: &str,
    encryption: &str,
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    let params = AesGcmParams::parse(crypto_key, encryption)?;
    decrypt(keys, &params, ciphertext)
}

fn decrypt_records(
    keys: &ContentKeys,
    record_len: usize,
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    // Decrypt in place and compact: the plaintext is never longer than the ciphertext.
    let mut buf = ciphertext.to_vec();
    let total = buf.len();
    let (mut read, mut write, mut seq) = (0usize, 0usize, 0u64);
    while read < total {
        let end = read.saturating_add(record_len).min(total);
        let record = buf.get_mut(read..end).ok_or(Error::ShortBlock)?;
        // As ecec: shorter than a tag cannot authenticate; a bare tag holds no delimiter.
        if record.len() < TAG_LEN {
            return Err(Error::BadTag);
        }
        if record.len() == TAG_LEN {
            return Err(Error::ShortBlock);
        }
        let (data, tag) = record.split_at_mut(record.len() - TAG_LEN);
        keys.open(seq, data, tag)?;
        let pad = match data {
            [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => return Err(Error::Padding),
        };
        let data_start = PAD_LEN_SIZE + pad;
        let padding = data.get(PAD_LEN_SIZE..data_start).ok_or(Error::Padding)?;
        if padding.iter().any(|&b| b != 0) {
            return Err(Error::Padding);
        }
        let data_len = data.len() - data_start;
        // `read + data_start + data_len <= end <= total` and `write <= read`: in bounds.
        buf.copy_within(read + data_start..read + data_start + data_len, write);
        write += data_len;
        read = end;
        seq += 1;
    }
    buf.truncate(write);
    Ok(buf)
}

/// An encrypted `aesgcm` message: the body and the values of its two headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesGcmMessage {
    /// The encrypted body (FCM's `raw_data`).
    pub ciphertext: Vec<u8>,
    /// The salt.
    pub salt: [u8; SALT_LEN],
    /// The sender's uncompressed public key.
    pub sender_public_key: [u8; PUBLIC_KEY_LEN],
    /// The record size.
    pub rs: u32,
}

impl AesGcmMessage {
    /// The `Crypto-Key` value: `dh=<sender public key, base64url>`.
    #[must_use]
    pub fn crypto_key_header(&self) -> String {
        format!("dh={}", b64::encode(&self.sender_public_key))
    }

    /// The `Encryption` value: `salt=<base64url>`, plus `;rs=<n>` unless it is 4096.
    #[must_use]
    pub fn encryption_header(&self) -> String {
        if self.rs == DEFAULT_RS {
            format!("salt={}", b64::encode(&self.salt))
        } else {
            format!("salt={};rs={}", b64::encode(&self.salt), self.rs)
        }
    }

    /// The parameters a receiver will parse from the two headers.
    #[must_use]
    pub fn params(&self) -> AesGcmParams {
        AesGcmParams::new(self.sender_public_key, self.salt, self.rs)
    }
}

/// Encrypts an `aesgcm` message to a subscription, with a fresh sender key pair and a random
/// salt.
pub fn encrypt(
    to: &SubscriptionKeys,
    plaintext: &[u8],
    opts: &EncryptOptions,
) -> Result<AesGcmMessage, Error> {
    let mut salt = [0u8; SALT_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    encrypt_with(to, plaintext, opts, &SenderKeys::generate(), &salt)
}

/// Encrypts an `aesgcm` message with the given sender key pair and salt.
///
/// Reusing a sender key and salt for two messages breaks their confidentiality: this exists
/// for reproducible output (test vectors).
pub fn encrypt_with(
    to: &SubscriptionKeys,
    plaintext: &[u8],
    opts: &EncryptOptions,
    sender: &SenderKeys,
    salt: &[u8; SALT_LEN],
) -> Result<AesGcmMessage, Error> {
    encrypt_with_in::<Active>(to, plaintext, opts, sender, salt)
}

/// [`encrypt_with`] with the given ECDH implementation.
pub(crate) fn encrypt_with_in<B: Ecdh>(
    to: &SubscriptionKeys,
    plaintext: &[u8],
    opts: &EncryptOptions,
    sender: &SenderKeys,
    salt: &[u8; SALT_LEN],
) -> Result<AesGcmMessage, Error> {
    if opts.rs() < MIN_AESGCM_RS {
        return Err(Error::InvalidRecordSize);
    }
    let rs = usize::try_from(opts.rs()).map_err(|_| Error::InvalidRecordSize)?;
    let ecdh = B::agree(sender.ec_key(), to.public_key())?;
    let content = ContentKeys::aesgcm(
        &ecdh,
        to.auth_secret(),
        to.public_key(),
        sender.public_key(),
        salt,
    )?;
    // Padding and data per record, after the 2-byte padding length.
    let per_record = rs - PAD_LEN_SIZE;
    let mut out = Vec::with_capacity(
        plaintext
            .len()
            .saturating_add(opts.pad())
            .saturating_add(TAG_LEN + PAD_LEN_SIZE)
            .min(1 << 20),
    );
    let (mut data_left, mut pad_left) = (plaintext, opts.pad());
    let mut seq = 0u64;
    loop {
        let pad = pad_left.min(per_record).min(usize::from(u16::MAX));
        let take = data_left.len().min(per_record - pad);
        let (data, rest) = data_left.split_at(take);
        let record_start = out.len();
        out.extend_from_slice(&u16::try_from(pad).map_err(|_| Error::Crypto)?.to_be_bytes());
        out.resize(out.len() + pad, 0);
        out.extend_from_slice(data);
        let full = out.len() - record_start == rs;
        let record = out.get_mut(record_start..).ok_or(Error::Crypto)?;
        let tag = content.seal(seq, record)?;
        out.extend_from_slice(&tag);
        data_left = rest;
        pad_left -= pad;
        seq = seq.checked_add(1).ok_or(Error::Crypto)?;
        // A full last record would read as truncated: then one more, empty, record follows.
        if data_left.is_empty() && pad_left == 0 && !full {
            break;
        }
    }
    Ok(AesGcmMessage {
        ciphertext: out,
        salt: *salt,
        sender_public_key: *sender.public_key(),
        rs: opts.rs(),
    })
}
