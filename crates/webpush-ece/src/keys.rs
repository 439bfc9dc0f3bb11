//! Key material: the receiver's key set, the sender's view of it, and ephemeral sender keys.
//!
//! Keys are parsed and validated once, when a [`ReceiverKeys`] is built, so that decrypting a
//! message costs one ECDH and no key parsing.

use core::fmt;

use p256::SecretKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ec::{EcKey, parse_public_key};
use crate::{Error, b64};

/// Length of an uncompressed P-256 public key: `0x04 ‖ x ‖ y`.
pub const PUBLIC_KEY_LEN: usize = 65;
/// Length of a raw P-256 private key (the big-endian scalar).
pub const PRIVATE_KEY_LEN: usize = 32;
/// Length of a Web Push auth secret.
pub const AUTH_SECRET_LEN: usize = 16;

/// A Web Push auth secret (16 bytes), zeroized on drop and redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct AuthSecret(pub(crate) [u8; AUTH_SECRET_LEN]);

impl AuthSecret {
    fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let array: [u8; AUTH_SECRET_LEN] =
            bytes.try_into().map_err(|_| Error::InvalidAuthSecret)?;
        Ok(Self(array))
    }
}

/// Parses a private key: a raw 32-byte scalar, a PKCS#8 DER document (what the Python
/// `pullkin` and `firebase-messaging` store) or a SEC1 `ECPrivateKey` DER document.
fn parse_private_key(bytes: &[u8]) -> Result<SecretKey, Error> {
    if bytes.len() == PRIVATE_KEY_LEN {
        return SecretKey::from_slice(bytes).map_err(|_| Error::InvalidPrivateKey);
    }
    // A raw scalar exported as a minimal big-endian integer (OpenSSL's BN_bn2bin does
    // this) is shorter when it starts with zero bytes: one key in 256 loses a byte, one
    // in 2^32 four. No DER encoding of a P-256 key is that short; anything shorter still
    // is not a key someone generated.
    if (PRIVATE_KEY_LEN - 4..PRIVATE_KEY_LEN).contains(&bytes.len()) {
        let mut padded = Zeroizing::new([0u8; PRIVATE_KEY_LEN]);
        padded[PRIVATE_KEY_LEN - bytes.len()..].copy_from_slice(bytes);
        return SecretKey::from_slice(&padded[..]).map_err(|_| Error::InvalidPrivateKey);
    }
    SecretKey::from_pkcs8_der(bytes)
        .or_else(|_| SecretKey::from_sec1_der(bytes))
        .map_err(|_| Error::InvalidPrivateKey)
}

fn decode_secret_b64(input: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    b64::decode(input.trim())
        .map(Zeroizing::new)
        .ok_or(Error::InvalidBase64)
}

/// The receiver's key set: a P-256 private key, its uncompressed public key and the auth
/// secret. This is what a Web Push subscription is made of on the receiving side, and what
/// decryption needs.
///
/// Build it once per receiver (generate it, or import it from storage); every decryption
/// then reuses the parsed key (for the `p256` implementation and, with the `aws-lc` feature,
/// for aws-lc-rs). The private key and the auth secret are zeroized on drop and never shown
/// by `Debug`.
///
/// ```
/// use webpush_ece::ReceiverKeys;
///
/// let keys = ReceiverKeys::generate();
/// let stored = (keys.private_key_pkcs8_base64()?, keys.auth_secret_base64());
/// let again = ReceiverKeys::from_base64(&stored.0, &stored.1)?;
/// assert_eq!(keys.public_key(), again.public_key());
/// assert!(!format!("{keys:?}").contains(&*stored.1));
/// # Ok::<(), webpush_ece::Error>(())
/// ```
#[derive(Clone)]
pub struct ReceiverKeys {
    key: EcKey,
    auth: AuthSecret,
}

impl ReceiverKeys {
    /// Generates a new key set from the operating system's random number generator (the
    /// private key with aws-lc-rs's generator when the `aws-lc` feature is on).
    #[must_use]
    pub fn generate() -> Self {
        let key = EcKey::generate();
        let mut auth = AuthSecret([0; AUTH_SECRET_LEN]);
        rand::rngs::OsRng.fill_bytes(&mut auth.0);
        Self { key, auth }
    }

    /// Generates a new key set from the given cryptographic random number generator.
    pub fn generate_with<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let key = EcKey::generate_with(rng);
        let mut auth = AuthSecret([0; AUTH_SECRET_LEN]);
        rng.fill_bytes(&mut auth.0);
        Self { key, auth }
    }

    /// Builds the key set from a private key and an auth secret, as raw bytes.
    ///
    /// `private_key` may be the 32-byte scalar, a PKCS#8 DER document or a SEC1 DER
    /// document; `auth_secret` must be 16 bytes. The public key is derived.
    pub fn from_raw(private_key: &[u8], auth_secret: &[u8]) -> Result<Self, Error> {
        let secret = parse_private_key(private_key)?;
        let auth = AuthSecret::from_slice(auth_secret)?;
        Ok(Self {
            key: EcKey::from_secret(secret),
            auth,
        })
    }

    /// Builds the key set from a PKCS#8 DER private key (as the Python `pullkin` and
    /// `firebase-messaging` store it, after base64 decoding) and a 16-byte auth secret.
    pub fn from_pkcs8_der(der: &[u8], auth_secret: &[u8]) -> Result<Self, Error> {
        let secret = SecretKey::from_pkcs8_der(der).map_err(|_| Error::InvalidPrivateKey)?;
        let auth = AuthSecret::from_slice(auth_secret)?;
        Ok(Self {
            key: EcKey::from_secret(secret),
            auth,
        })
    }

    /// Builds the key set from base64 strings (URL-safe or standard, padded or not), the
    /// private key being any form [`ReceiverKeys::from_raw`] accepts.
    ///
    /// This reads the `private` and `secret` entries of the Python `pullkin` /
    /// `firebase-messaging` credentials directly; check their `public` entry with
    /// [`ReceiverKeys::check_public_key`].
    pub fn from_base64(private_key: &str, auth_secret: &str) -> Result<Self, Error> {
        let private = decode_secret_b64(private_key)?;
        let auth = decode_secret_b64(auth_secret)?;
        Self::from_raw(&private, &auth)
    }

    /// Checks that a stored public key (raw bytes, or base64 text of them) is the one this
    /// private key derives, so a corrupted credential file is caught at load time.
    pub fn check_public_key(&self, public_key: impl AsRef<[u8]>) -> Result<(), Error> {
        let given = public_key.as_ref();
        if given == self.public_key() {
            return Ok(());
        }
        match core::str::from_utf8(given)
            .ok()
            .and_then(|s| b64::decode(s.trim()))
        {
            Some(decoded) if decoded == self.public_key() => Ok(()),
            _ => Err(Error::InvalidPublicKey),
        }
    }

    /// The uncompressed public key (`p256dh` of the subscription), 65 bytes.
    #[must_use]
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.key.public_key()
    }

    /// The public key as unpadded URL-safe base64, the form a subscription carries.
    #[must_use]
    pub fn public_key_base64(&self) -> String {
        b64::encode(self.public_key())
    }

    /// The 16-byte auth secret.
    #[must_use]
    pub fn auth_secret(&self) -> &[u8; AUTH_SECRET_LEN] {
        &self.auth.0
    }

    /// The auth secret as unpadded URL-safe base64 (zeroized on drop).
    #[must_use]
    pub fn auth_secret_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(b64::encode(&self.auth.0))
    }

    /// The raw 32-byte private scalar (zeroized on drop).
    #[must_use]
    pub fn private_key_raw(&self) -> Zeroizing<[u8; PRIVATE_KEY_LEN]> {
        let mut bytes = self.key.secret().to_bytes();
        let mut out = Zeroizing::new([0; PRIVATE_KEY_LEN]);
        out.copy_from_slice(&bytes);
        bytes.zeroize();
        out
    }

    /// The raw 32-byte private scalar as unpadded URL-safe base64 (zeroized on drop).
    #[must_use]
    pub fn private_key_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(b64::encode(&self.private_key_raw()[..]))
    }

    /// The private key as a PKCS#8 DER document (zeroized on drop).
    pub fn private_key_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let doc = self
            .key
            .secret()
            .to_pkcs8_der()
            .map_err(|_| Error::InvalidPrivateKey)?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The private key as unpadded URL-safe base64 of its PKCS#8 DER form: what the Python
    /// `pullkin` stores (it pads; both forms are read back).
    pub fn private_key_pkcs8_base64(&self) -> Result<Zeroizing<String>, Error> {
        let der = self.private_key_pkcs8_der()?;
        Ok(Zeroizing::new(b64::encode(&der)))
    }

    /// The sender's view of these keys: what a push server needs to encrypt to them.
    #[must_use]
    pub fn subscription_keys(&self) -> SubscriptionKeys {
        SubscriptionKeys {
            // The point was computed from a valid private key when these keys were built.
            public: *self.public_key(),
            auth: self.auth.clone(),
        }
    }

    pub(crate) fn ec_key(&self) -> &EcKey {
        &self.key
    }

    pub(crate) fn auth(&self) -> &[u8; AUTH_SECRET_LEN] {
        &self.auth.0
    }
}

impl fmt::Debug for ReceiverKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverKeys")
            .field("public_key", &b64::encode(self.public_key()))
            .field("private_key", &"<redacted>")
            .field("auth_secret", &"<redacted>")
            .finish()
    }
}

/// A subscription's keys as a sender sees them: the receiver's public key (`p256dh`) and
/// auth secret (`auth`). Encryption takes this.
#[derive(Clone)]
pub struct SubscriptionKeys {
    /// Validated as a P-256 point when built.
    public: [u8; PUBLIC_KEY_LEN],
    auth: AuthSecret,
}

impl SubscriptionKeys {
    /// Builds them from the raw 65-byte uncompressed public key and 16-byte auth secret.
    pub fn from_raw(p256dh: &[u8], auth: &[u8]) -> Result<Self, Error> {
        parse_public_key(p256dh)?;
        let public = p256dh.try_into().map_err(|_| Error::InvalidPublicKey)?;
        let auth = AuthSecret::from_slice(auth)?;
        Ok(Self { public, auth })
    }

    /// Builds them from base64 (URL-safe or standard, padded or not), as found in a
    /// `PushSubscription`'s `keys`.
    pub fn from_base64(p256dh: &str, auth: &str) -> Result<Self, Error> {
        let public = b64::decode(p256dh.trim()).ok_or(Error::InvalidBase64)?;
        let auth = decode_secret_b64(auth)?;
        Self::from_raw(&public, &auth)
    }

    /// The receiver's uncompressed public key.
    #[must_use]
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// The receiver's auth secret.
    #[must_use]
    pub fn auth_secret(&self) -> &[u8; AUTH_SECRET_LEN] {
        &self.auth.0
    }
}

impl fmt::Debug for SubscriptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionKeys")
            .field("public_key", &b64::encode(&self.public))
            .field("auth_secret", &"<redacted>")
            .finish()
    }
}

/// A sender's key pair. Encryption normally makes a fresh one per message; building one
/// explicitly exists for reproducible tests (such as the RFC 8291 example).
#[derive(Clone)]
pub struct SenderKeys {
    key: EcKey,
}

impl SenderKeys {
    /// Generates an ephemeral key pair from the operating system's random number generator
    /// (with aws-lc-rs's generator when the `aws-lc` feature is on).
    #[must_use]
    pub fn generate() -> Self {
        Self {
            key: EcKey::generate(),
        }
    }

    /// Generates an ephemeral key pair from the given random number generator.
    pub fn generate_with<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self {
            key: EcKey::generate_with(rng),
        }
    }

    /// Imports a private key (raw 32-byte scalar, PKCS#8 or SEC1 DER).
    pub fn from_raw(private_key: &[u8]) -> Result<Self, Error> {
        let secret = parse_private_key(private_key)?;
        Ok(Self {
            key: EcKey::from_secret(secret),
        })
    }

    /// The uncompressed public key, sent to the receiver as `dh` or as the `keyid`.
    #[must_use]
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.key.public_key()
    }

    pub(crate) fn ec_key(&self) -> &EcKey {
        &self.key
    }
}

impl fmt::Debug for SenderKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeys")
            .field("public_key", &b64::encode(self.public_key()))
            .field("private_key", &"<redacted>")
            .finish()
    }
}
