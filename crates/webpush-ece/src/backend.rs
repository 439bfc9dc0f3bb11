//! Either P-256 implementation, chosen explicitly (only with the `aws-lc` feature).
//!
//! The `aws-lc` cargo feature makes every function of this crate compute its ECDH (and
//! generate its keys) with aws-lc-rs instead of the pure-Rust `p256`. Both stay compiled;
//! this module runs the one you name, so that the two can be tested against each other and
//! benchmarked side by side in one build. Everything else about a call is the same as the
//! crate-level function it mirrors.
//!
//! ```
//! use webpush_ece::backend::Backend;
//! use webpush_ece::{EncryptOptions, ReceiverKeys, SenderKeys};
//!
//! let keys = ReceiverKeys::generate();
//! let sender = SenderKeys::generate();
//! let body = Backend::P256.aes128gcm_encrypt_with(
//!     &keys.subscription_keys(), b"hi", &EncryptOptions::new(), &sender, &[7; 16])?;
//! assert_eq!(Backend::AwsLc.aes128gcm_decrypt(&keys, &body)?, b"hi");
//! assert_eq!(
//!     *Backend::P256.ecdh(&keys, sender.public_key())?,
//!     *Backend::AwsLc.ecdh(&keys, sender.public_key())?,
//! );
//! # Ok::<(), webpush_ece::Error>(())
//! ```

use zeroize::Zeroizing;

use crate::aesgcm::AesGcmMessage;
use crate::ec::{AwsLc, Ecdh, P256};
use crate::keys::PUBLIC_KEY_LEN;
use crate::{
    AesGcmParams, EncryptOptions, Error, ReceiverKeys, SALT_LEN, SenderKeys, SubscriptionKeys,
    aes128gcm, aesgcm,
};

/// A P-256 implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// The pure-Rust `p256` crate (the default without the `aws-lc` feature).
    P256,
    /// aws-lc-rs, over AWS-LC (what the crate-level functions use with the `aws-lc` feature).
    AwsLc,
}

impl Backend {
    /// Every implementation compiled in.
    pub const ALL: [Self; 2] = [Self::P256, Self::AwsLc];

    /// The implementation the crate-level functions use.
    pub const ACTIVE: Self = Self::AwsLc;

    /// A short name, for reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::P256 => "p256",
            Self::AwsLc => "aws-lc",
        }
    }

    /// The raw P-256 ECDH shared secret (the x coordinate) of the receiver's private key and
    /// a peer's uncompressed public key, zeroized on drop.
    ///
    /// Fails with [`Error::InvalidPublicKey`] unless `peer_public` is a valid 65-byte
    /// uncompressed point.
    pub fn ecdh(
        self,
        keys: &ReceiverKeys,
        peer_public: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, Error> {
        let peer: &[u8; PUBLIC_KEY_LEN] = peer_public
            .try_into()
            .map_err(|_| Error::InvalidPublicKey)?;
        match self {
            Self::P256 => P256::agree(keys.ec_key(), peer),
            Self::AwsLc => AwsLc::agree(keys.ec_key(), peer),
        }
    }

    /// [`aes128gcm::decrypt`] with this implementation.
    pub fn aes128gcm_decrypt(self, keys: &ReceiverKeys, payload: &[u8]) -> Result<Vec<u8>, Error> {
        match self {
            Self::P256 => aes128gcm::decrypt_in::<P256>(keys, payload),
            Self::AwsLc => aes128gcm::decrypt_in::<AwsLc>(keys, payload),
        }
    }

    /// [`aes128gcm::encrypt_with`] with this implementation.
    pub fn aes128gcm_encrypt_with(
        self,
        to: &SubscriptionKeys,
        plaintext: &[u8],
        opts: &EncryptOptions,
        sender: &SenderKeys,
        salt: &[u8; SALT_LEN],
    ) -> Result<Vec<u8>, Error> {
        match self {
            Self::P256 => aes128gcm::encrypt_with_in::<P256>(to, plaintext, opts, sender, salt),
            Self::AwsLc => aes128gcm::encrypt_with_in::<AwsLc>(to, plaintext, opts, sender, salt),
        }
    }

    /// [`aesgcm::decrypt`] with this implementation.
    pub fn aesgcm_decrypt(
        self,
        keys: &ReceiverKeys,
        params: &AesGcmParams,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        match self {
            Self::P256 => aesgcm::decrypt_in::<P256>(keys, params, ciphertext),
            Self::AwsLc => aesgcm::decrypt_in::<AwsLc>(keys, params, ciphertext),
        }
    }

    /// [`aesgcm::encrypt_with`] with this implementation.
    pub fn aesgcm_encrypt_with(
        self,
        to: &SubscriptionKeys,
        plaintext: &[u8],
        opts: &EncryptOptions,
        sender: &SenderKeys,
        salt: &[u8; SALT_LEN],
    ) -> Result<AesGcmMessage, Error> {
        match self {
            Self::P256 => aesgcm::encrypt_with_in::<P256>(to, plaintext, opts, sender, salt),
            Self::AwsLc => aesgcm::encrypt_with_in::<AwsLc>(to, plaintext, opts, sender, salt),
        }
    }
}
