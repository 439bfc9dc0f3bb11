//! The `aes128gcm` content encoding: RFC 8188 records keyed by the RFC 8291 Web Push key
//! schedule, or directly by an input keying material (plain RFC 8188).
//!
//! ```text
//! +-----------+--------+-----------+---------------+
//! | salt (16) | rs (4) | idlen (1) | keyid (idlen) |   header; for Web Push the keyid
//! +-----------+--------+-----------+---------------+   is the sender's 65-byte public key
//! | record 0: rs bytes = AES-GCM(data ‖ 0x01 ‖ 0x00*) ‖ tag(16)  |
//! | ...                                                          |
//! | last record: <= rs bytes = AES-GCM(data ‖ 0x02 ‖ 0x00*) ‖ tag |
//! +--------------------------------------------------------------+
//! ```
//!
//! Every record but the last is exactly `rs` bytes and ends its plaintext with the delimiter
//! 1; the last ends it with 2. A message with no record marked last is truncated.
//!
//! ## A deliberate leniency: a header with no record
//!
//! RFC 8188 always ends a message with a record, also for an empty plaintext (one record
//! holding only the delimiter). Python's `http_ece` writes no record at all for an empty
//! plaintext: its body is the header alone. [`decrypt`] and [`decrypt_with_ikm`] take such a
//! body as an empty payload instead of failing (docs/protocol.md §5.4). Nothing in it is
//! authenticated, so it says only "a push with nothing in it"; the key id must still be a
//! valid public key for [`decrypt`]. A header followed by any bytes at all is decrypted and
//! checked as usual.

use crate::ec::{Active, Ecdh};
use crate::kdf::{self, ContentKeys, SALT_LEN, TAG_LEN};
use crate::keys::{PUBLIC_KEY_LEN, ReceiverKeys, SenderKeys, SubscriptionKeys};
use crate::{EncryptOptions, Error};

/// Length of the fixed part of the header: salt, record size and key id length.
pub const HEADER_LEN: usize = SALT_LEN + 4 + 1;
/// The smallest record size: a 16-byte tag, the delimiter and one byte of content.
pub const MIN_RECORD_SIZE: u32 = TAG_LEN as u32 + 2;

const DELIMITER_RECORD: u8 = 1;
const DELIMITER_LAST: u8 = 2;

/// The header at the start of an `aes128gcm` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The 16-byte salt.
    pub salt: &'a [u8; SALT_LEN],
    /// The record size (encrypted records, tag included).
    pub rs: u32,
    /// The key id; for Web Push, the sender's uncompressed public key.
    pub keyid: &'a [u8],
}

impl<'a> Header<'a> {
    /// Splits a payload into its header and the records that follow, which may be none
    /// (see the module documentation: a header alone is an empty payload).
    ///
    /// Fails with [`Error::ShortHeader`] or [`Error::InvalidRecordSize`] (below 18).
    pub fn parse(payload: &'a [u8]) -> Result<(Self, &'a [u8]), Error> {
        let salt = payload
            .get(..SALT_LEN)
            .and_then(|s| <&[u8; SALT_LEN]>::try_from(s).ok())
            .ok_or(Error::ShortHeader)?;
        let rs_bytes: [u8; 4] = payload
            .get(SALT_LEN..SALT_LEN + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::ShortHeader)?;
        let idlen = usize::from(*payload.get(SALT_LEN + 4).ok_or(Error::ShortHeader)?);
        let keyid = payload
            .get(HEADER_LEN..HEADER_LEN + idlen)
            .ok_or(Error::ShortHeader)?;
        let rs = u32::from_be_bytes(rs_bytes);
        if rs < MIN_RECORD_SIZE {
            return Err(Error::InvalidRecordSize);
        }
        let records = payload.get(HEADER_LEN + idlen..).unwrap_or_default();
        Ok((Self { salt, rs, keyid }, records))
    }
}

/// Decrypts a Web Push message (RFC 8291): the sender's public key is the header's key id.
/// A header with no record decrypts to an empty payload (see the module documentation).
///
/// ```
/// use webpush_ece::{EncryptOptions, ReceiverKeys, aes128gcm};
///
/// let keys = ReceiverKeys::generate();
/// let body = aes128gcm::encrypt(&keys.subscription_keys(), b"hi", &EncryptOptions::new())?;
/// assert_eq!(aes128gcm::decrypt(&keys, &body)?, b"hi");
/// # Ok::<(), webpush_ece::Error>(())
/// ```
pub fn decrypt(keys: &ReceiverKeys, payload: &[u8]) -> Result<Vec<u8>, Error> {
    decrypt_in::<Active>(keys, payload)
}

/// [`decrypt`] with the given ECDH implementation.
pub(crate) fn decrypt_in<B: Ecdh>(keys: &ReceiverKeys, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let (header, records) = Header::parse(payload)?;
    let sender_public: &[u8; PUBLIC_KEY_LEN] = header
        .keyid
        .try_into()
        .map_err(|_| Error::InvalidPublicKey)?;
    let ecdh = B::agree(keys.ec_key(), sender_public)?;
    if records.is_empty() {
        // Python's `http_ece` for an empty plaintext: the header alone (module docs).
        return Ok(Vec::new());
    }
    let ikm = kdf::webpush_ikm(&ecdh, keys.auth(), keys.public_key(), sender_public)?;
    let content = ContentKeys::aes128gcm(&*ikm, header.salt)?;
    decrypt_records(&content, header.rs, records)
}

/// Decrypts a plain RFC 8188 payload keyed directly by `ikm` (the key id is ignored). A
/// header with no record decrypts to an empty payload (see the module documentation).
pub fn decrypt_with_ikm(ikm: &[u8], payload: &[u8]) -> Result<Vec<u8>, Error> {
    let (header, records) = Header::parse(payload)?;
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let content = ContentKeys::aes128gcm(ikm, header.salt)?;
    decrypt_records(&content, header.rs, records)
}

fn decrypt_records(keys: &ContentKeys, rs: u32, records: &[u8]) -> Result<Vec<u8>, Error> {
    let rs = usize::try_from(rs).map_err(|_| Error::InvalidRecordSize)?;
    // Decrypt in place and compact: the plaintext is never longer than the ciphertext.
    let mut buf = records.to_vec();
    let total = buf.len();
    let (mut read, mut write, mut seq) = (0usize, 0usize, 0u64);
    while read < total {
        let end = read.saturating_add(rs).min(total);
        let last = end == total;
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
        let delimiter_at = data
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(Error::ZeroPlaintext)?;
        match (data.get(delimiter_at).copied(), last) {
            (Some(DELIMITER_LAST), true) | (Some(DELIMITER_RECORD), false) => {}
            // A full final record still marked "more follows": the rest was cut off.
            (Some(DELIMITER_RECORD), true) if end - read == rs => return Err(Error::Truncated),
            _ => return Err(Error::Padding),
        }
        // `read + delimiter_at < end <= total` and `write <= read`: in bounds.
        buf.copy_within(read..read + delimiter_at, write);
        write += delimiter_at;
        read = end;
        seq += 1;
    }
    buf.truncate(write);
    Ok(buf)
}

/// Encrypts a Web Push message (RFC 8291) to a subscription, with a fresh sender key pair
/// and a random salt. The result is the whole request body.
pub fn encrypt(
    to: &SubscriptionKeys,
    plaintext: &[u8],
    opts: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    let mut salt = [0u8; SALT_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    encrypt_with(to, plaintext, opts, &SenderKeys::generate(), &salt)
}

/// Encrypts a Web Push message with the given sender key pair and salt.
///
/// Reusing a sender key and salt for two messages breaks their confidentiality: this exists
/// for reproducible output (test vectors).
pub fn encrypt_with(
    to: &SubscriptionKeys,
    plaintext: &[u8],
    opts: &EncryptOptions,
    sender: &SenderKeys,
    salt: &[u8; SALT_LEN],
) -> Result<Vec<u8>, Error> {
    encrypt_with_in::<Active>(to, plaintext, opts, sender, salt)
}

/// [`encrypt_with`] with the given ECDH implementation.
pub(crate) fn encrypt_with_in<B: Ecdh>(
    to: &SubscriptionKeys,
    plaintext: &[u8],
    opts: &EncryptOptions,
    sender: &SenderKeys,
    salt: &[u8; SALT_LEN],
) -> Result<Vec<u8>, Error> {
    let ecdh = B::agree(sender.ec_key(), to.public_key())?;
    let ikm = kdf::webpush_ikm(
        &ecdh,
        to.auth_secret(),
        to.public_key(),
        sender.public_key(),
    )?;
    let content = ContentKeys::aes128gcm(&*ikm, salt)?;
    encrypt_records(&content, salt, sender.public_key(), plaintext, opts)
}

/// Encrypts a plain RFC 8188 payload keyed directly by `ikm`, with the given salt and key id
/// (at most 255 bytes).
pub fn encrypt_with_ikm(
    ikm: &[u8],
    salt: &[u8; SALT_LEN],
    keyid: &[u8],
    plaintext: &[u8],
    opts: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    let content = ContentKeys::aes128gcm(ikm, salt)?;
    encrypt_records(&content, salt, keyid, plaintext, opts)
}

fn encrypt_records(
    keys: &ContentKeys,
    salt: &[u8; SALT_LEN],
    keyid: &[u8],
    plaintext: &[u8],
    opts: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    if opts.rs() < MIN_RECORD_SIZE {
        return Err(Error::InvalidRecordSize);
    }
    let idlen = u8::try_from(keyid.len()).map_err(|_| Error::Crypto)?;
    let rs = usize::try_from(opts.rs()).map_err(|_| Error::InvalidRecordSize)?;
    // Content bytes per record (data, or padding beyond the delimiter): at least 1.
    let per_record = rs - TAG_LEN - 1;
    let content_len = plaintext.len().saturating_add(opts.pad());
    let overhead = (content_len / per_record + 1).saturating_mul(TAG_LEN + 1);
    let mut out = Vec::with_capacity(
        content_len
            .saturating_add(overhead)
            .saturating_add(HEADER_LEN + keyid.len())
            .min(1 << 20),
    );
    out.extend_from_slice(salt);
    out.extend_from_slice(&opts.rs().to_be_bytes());
    out.push(idlen);
    out.extend_from_slice(keyid);
    // Like the reference implementation, padding goes first, each record keeping room for
    // one byte of data while data remains; records of padding alone end the message.
    let (mut data_left, mut pad_left) = (plaintext, opts.pad());
    let mut seq = 0u64;
    loop {
        let room_for_data = usize::from(!data_left.is_empty());
        let pad = pad_left.min(per_record - room_for_data);
        let take = data_left.len().min(per_record - pad);
        let (data, rest) = data_left.split_at(take);
        data_left = rest;
        pad_left -= pad;
        let last = data_left.is_empty() && pad_left == 0;
        let record_start = out.len();
        out.extend_from_slice(data);
        out.push(if last {
            DELIMITER_LAST
        } else {
            DELIMITER_RECORD
        });
        out.resize(out.len() + pad, 0);
        let record = out.get_mut(record_start..).ok_or(Error::Crypto)?;
        let tag = keys.seal(seq, record)?;
        out.extend_from_slice(&tag);
        if last {
            break;
        }
        seq = seq.checked_add(1).ok_or(Error::Crypto)?;
    }
    Ok(out)
}
