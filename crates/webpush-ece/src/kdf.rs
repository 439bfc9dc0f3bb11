//! Key schedules (RFC 8188, RFC 8291, draft-ietf-webpush-encryption-04) and the per-record
//! AES-128-GCM operations they feed.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::Error;
use crate::keys::{AUTH_SECRET_LEN, PUBLIC_KEY_LEN};

/// Length of the AES-GCM authentication tag that ends every record.
pub(crate) const TAG_LEN: usize = 16;
/// Length of the salt of both encodings.
pub(crate) const SALT_LEN: usize = 16;
const KEY_LEN: usize = 16;
const NONCE_LEN: usize = 12;

/// RFC 8291 §3.3: `IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info\0" ‖ ua_public ‖
/// as_public, 32)`.
pub(crate) fn webpush_ikm(
    ecdh_secret: &[u8; 32],
    auth: &[u8; AUTH_SECRET_LEN],
    ua_public: &[u8; PUBLIC_KEY_LEN],
    as_public: &[u8; PUBLIC_KEY_LEN],
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let hk = Hkdf::<Sha256>::new(Some(auth), ecdh_secret);
    let mut ikm = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[b"WebPush: info\0", ua_public, as_public], &mut *ikm)
        .map_err(|_| Error::Crypto)?;
    Ok(ikm)
}

/// The content-encryption key and base nonce of one message.
pub(crate) struct ContentKeys {
    cipher: Aes128Gcm,
    nonce: Zeroizing<[u8; NONCE_LEN]>,
}

impl ContentKeys {
    fn from_parts(cek: &[u8; KEY_LEN], nonce: Zeroizing<[u8; NONCE_LEN]>) -> Self {
        Self {
            cipher: Aes128Gcm::new(cek.into()),
            nonce,
        }
    }

    /// RFC 8188 §2.2-2.3: `PRK = HKDF-Extract(salt, IKM)`, then the key and nonce with the
    /// `aes128gcm` and `nonce` infos.
    pub(crate) fn aes128gcm(ikm: &[u8], salt: &[u8; SALT_LEN]) -> Result<Self, Error> {
        let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
        let mut cek = Zeroizing::new([0u8; KEY_LEN]);
        let mut nonce = Zeroizing::new([0u8; NONCE_LEN]);
        hk.expand(b"Content-Encoding: aes128gcm\0", &mut *cek)
            .map_err(|_| Error::Crypto)?;
        hk.expand(b"Content-Encoding: nonce\0", &mut *nonce)
            .map_err(|_| Error::Crypto)?;
        Ok(Self::from_parts(&cek, nonce))
    }

    /// draft-ietf-webpush-encryption-04 (with draft-ietf-httpbis-encryption-encoding-03):
    /// `IKM = HKDF(auth, ecdh, "Content-Encoding: auth\0", 32)`, then the key and nonce from
    /// `HKDF(salt, IKM, "Content-Encoding: <aesgcm|nonce>\0" ‖ context)` where
    /// `context = "P-256\0" ‖ u16be(65) ‖ receiver public ‖ u16be(65) ‖ sender public`.
    pub(crate) fn aesgcm(
        ecdh_secret: &[u8; 32],
        auth: &[u8; AUTH_SECRET_LEN],
        receiver_public: &[u8; PUBLIC_KEY_LEN],
        sender_public: &[u8; PUBLIC_KEY_LEN],
        salt: &[u8; SALT_LEN],
    ) -> Result<Self, Error> {
        let mut ikm = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(auth), ecdh_secret)
            .expand(b"Content-Encoding: auth\0", &mut *ikm)
            .map_err(|_| Error::Crypto)?;
        let hk = Hkdf::<Sha256>::new(Some(salt), &*ikm);
        const KEY_LEN_BE: [u8; 2] = [0, PUBLIC_KEY_LEN as u8];
        let context: [&[u8]; 5] = [
            b"P-256\0",
            &KEY_LEN_BE,
            receiver_public,
            &KEY_LEN_BE,
            sender_public,
        ];
        let mut cek = Zeroizing::new([0u8; KEY_LEN]);
        let mut nonce = Zeroizing::new([0u8; NONCE_LEN]);
        let [c0, c1, c2, c3, c4] = context;
        hk.expand_multi_info(
            &[b"Content-Encoding: aesgcm\0", c0, c1, c2, c3, c4],
            &mut *cek,
        )
        .map_err(|_| Error::Crypto)?;
        hk.expand_multi_info(
            &[b"Content-Encoding: nonce\0", c0, c1, c2, c3, c4],
            &mut *nonce,
        )
        .map_err(|_| Error::Crypto)?;
        Ok(Self::from_parts(&cek, nonce))
    }

    /// The nonce of record `seq`: the base nonce XOR the 96-bit big-endian sequence number.
    fn record_nonce(&self, seq: u64) -> aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
        let mut nonce = *self.nonce;
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&nonce[NONCE_LEN - 8..]);
        let mixed = u64::from_be_bytes(tail) ^ seq;
        nonce[NONCE_LEN - 8..].copy_from_slice(&mixed.to_be_bytes());
        nonce.into()
    }

    /// Decrypts record `seq` in place; `tag` is its last 16 bytes.
    pub(crate) fn open(&self, seq: u64, data: &mut [u8], tag: &[u8]) -> Result<(), Error> {
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Error::ShortBlock)?;
        self.cipher
            .decrypt_in_place_detached(&self.record_nonce(seq), b"", data, &tag.into())
            .map_err(|_| Error::BadTag)
    }

    /// Encrypts record `seq` in place and returns its tag.
    pub(crate) fn seal(&self, seq: u64, data: &mut [u8]) -> Result<[u8; TAG_LEN], Error> {
        let tag = self
            .cipher
            .encrypt_in_place_detached(&self.record_nonce(seq), b"", data)
            .map_err(|_| Error::Crypto)?;
        Ok(tag.into())
    }
}
