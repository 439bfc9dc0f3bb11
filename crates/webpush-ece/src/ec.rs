//! The P-256 step of both encodings — key generation, public key derivation and ECDH —
//! behind a small implementation choice made at compile time.
//!
//! The pure-Rust `p256` crate is the default. With the `aws-lc` cargo feature, aws-lc-rs
//! (AWS-LC, about 3-4x faster at ECDH) generates the keys and computes every ECDH; the `p256`
//! path stays compiled, both because the key import and export formats (PKCS#8, SEC1) are
//! parsed with it and so that `crate::backend` can run either one explicitly for
//! differential tests and benchmarks.
//!
//! Keys are parsed once for every compiled implementation when an `EcKey` is built, so an
//! ECDH costs no private-key parsing.

use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::Error;
use crate::keys::PUBLIC_KEY_LEN;

/// Length of a P-256 ECDH shared secret (the x coordinate).
pub(crate) const SHARED_SECRET_LEN: usize = 32;

/// A P-256 ECDH shared secret, zeroized on drop.
pub(crate) type SharedSecret = Zeroizing<[u8; SHARED_SECRET_LEN]>;

/// One implementation of P-256 ECDH over an [`EcKey`].
pub(crate) trait Ecdh {
    /// The shared secret of `key`'s private scalar and `peer`, an uncompressed point that is
    /// validated here: anything but a valid point gives [`Error::InvalidPublicKey`].
    fn agree(key: &EcKey, peer: &[u8; PUBLIC_KEY_LEN]) -> Result<SharedSecret, Error>;
}

/// The pure-Rust `p256` implementation.
pub(crate) struct P256;

/// The aws-lc-rs implementation.
#[cfg(feature = "aws-lc")]
pub(crate) struct AwsLc;

/// The implementation the crate's public functions use.
#[cfg(not(feature = "aws-lc"))]
pub(crate) type Active = P256;
/// The implementation the crate's public functions use.
#[cfg(feature = "aws-lc")]
pub(crate) type Active = AwsLc;

/// Parses a 65-byte uncompressed SEC1 point; compressed points and the identity are refused
/// because the Web Push key schedule hashes the uncompressed form.
pub(crate) fn parse_public_key(bytes: &[u8]) -> Result<PublicKey, Error> {
    if bytes.len() != PUBLIC_KEY_LEN || bytes.first() != Some(&4) {
        return Err(Error::InvalidPublicKey);
    }
    PublicKey::from_sec1_bytes(bytes).map_err(|_| Error::InvalidPublicKey)
}

fn encode_public_key(key: &PublicKey) -> Result<[u8; PUBLIC_KEY_LEN], Error> {
    key.to_encoded_point(false)
        .as_bytes()
        .try_into()
        .map_err(|_| Error::InvalidPublicKey)
}

/// A P-256 private key parsed for every compiled implementation, with its uncompressed
/// public key. The private parts are zeroized on drop (`p256::SecretKey` does it itself;
/// AWS-LC cleanses the memory it frees).
#[derive(Clone)]
pub(crate) struct EcKey {
    /// The `p256` form: the default ECDH, and the import/export formats.
    secret: SecretKey,
    /// The aws-lc-rs form, shared by clones. `None` only if AWS-LC failed internally to take
    /// a valid scalar (not expected); ECDH then falls back to `p256`, so generation stays
    /// infallible and nothing panics.
    #[cfg(feature = "aws-lc")]
    aws_lc: Option<std::sync::Arc<aws_lc_rs::agreement::PrivateKey>>,
    public: [u8; PUBLIC_KEY_LEN],
}

impl EcKey {
    /// Generates a key with the active implementation's generator and the operating
    /// system's randomness.
    pub(crate) fn generate() -> Self {
        #[cfg(feature = "aws-lc")]
        if let Some(key) = aws_lc::generate() {
            return key;
        }
        Self::generate_with(&mut OsRng)
    }

    /// Generates a key from the given random number generator (the scalar is drawn by
    /// `p256`, so a seeded generator gives the same key with either implementation).
    pub(crate) fn generate_with<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self::from_secret(SecretKey::random(rng))
    }

    /// Builds the key from a `p256` scalar, parsing it for the other implementation too. The
    /// public key is computed by the active implementation.
    pub(crate) fn from_secret(secret: SecretKey) -> Self {
        #[cfg(feature = "aws-lc")]
        if let Some((aws, public)) = aws_lc::import(&secret) {
            return Self {
                secret,
                aws_lc: Some(std::sync::Arc::new(aws)),
                public,
            };
        }
        // An uncompressed encoding of a non-identity point is always 65 bytes.
        let public = encode_public_key(&secret.public_key()).unwrap_or([0; PUBLIC_KEY_LEN]);
        Self {
            secret,
            #[cfg(feature = "aws-lc")]
            aws_lc: None,
            public,
        }
    }

    /// The `p256` private key.
    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// The uncompressed public key.
    pub(crate) fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// Whether the aws-lc-rs form of the key is present (it always should be).
    #[cfg(all(test, feature = "aws-lc"))]
    pub(crate) fn has_aws_lc(&self) -> bool {
        self.aws_lc.is_some()
    }
}

impl Ecdh for P256 {
    fn agree(key: &EcKey, peer: &[u8; PUBLIC_KEY_LEN]) -> Result<SharedSecret, Error> {
        let public = parse_public_key(peer)?;
        let shared = p256::ecdh::diffie_hellman(key.secret.to_nonzero_scalar(), public.as_affine());
        let mut out = Zeroizing::new([0u8; SHARED_SECRET_LEN]);
        out.copy_from_slice(shared.raw_secret_bytes());
        Ok(out)
    }
}

#[cfg(feature = "aws-lc")]
impl Ecdh for AwsLc {
    fn agree(key: &EcKey, peer: &[u8; PUBLIC_KEY_LEN]) -> Result<SharedSecret, Error> {
        use aws_lc_rs::agreement::{ECDH_P256, UnparsedPublicKey, agree};
        // AWS-LC would also take compressed points and X.509 documents: only the
        // uncompressed form is a Web Push key.
        if peer.first() != Some(&4) {
            return Err(Error::InvalidPublicKey);
        }
        let Some(private) = key.aws_lc.as_deref() else {
            return P256::agree(key, peer);
        };
        agree(
            private,
            UnparsedPublicKey::new(&ECDH_P256, peer),
            Error::InvalidPublicKey,
            |shared| {
                let mut out = Zeroizing::new([0u8; SHARED_SECRET_LEN]);
                if shared.len() != SHARED_SECRET_LEN {
                    return Err(Error::Crypto);
                }
                out.copy_from_slice(shared);
                Ok(out)
            },
        )
    }
}

/// Key generation and import through aws-lc-rs.
#[cfg(feature = "aws-lc")]
mod aws_lc {
    use aws_lc_rs::agreement::{ECDH_P256, PrivateKey};
    use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
    use p256::SecretKey;
    use zeroize::Zeroize;

    use super::EcKey;
    use crate::keys::PUBLIC_KEY_LEN;

    /// The uncompressed public key of an aws-lc-rs private key.
    fn public_key(key: &PrivateKey) -> Option<[u8; PUBLIC_KEY_LEN]> {
        key.compute_public_key().ok()?.as_ref().try_into().ok()
    }

    /// Imports a `p256` scalar; `None` if AWS-LC fails (not expected for a valid scalar).
    pub(super) fn import(secret: &SecretKey) -> Option<(PrivateKey, [u8; PUBLIC_KEY_LEN])> {
        let mut scalar = secret.to_bytes();
        let key = PrivateKey::from_private_key(&ECDH_P256, &scalar);
        scalar.zeroize();
        let key = key.ok()?;
        let public = public_key(&key)?;
        Some((key, public))
    }

    /// Generates a key pair with AWS-LC's generator; `None` if it fails.
    pub(super) fn generate() -> Option<EcKey> {
        let key = PrivateKey::generate(&ECDH_P256).ok()?;
        // A buffer that zeroizes itself on drop.
        let scalar: EcPrivateKeyBin<'static> = key.as_be_bytes().ok()?;
        let secret = SecretKey::from_slice(scalar.as_ref()).ok()?;
        let public = public_key(&key)?;
        Some(EcKey {
            secret,
            aws_lc: Some(std::sync::Arc::new(key)),
            public,
        })
    }
}

#[cfg(all(test, feature = "aws-lc"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn both_forms_are_built_and_agree() {
        for key in [
            EcKey::generate(),
            EcKey::generate_with(&mut OsRng),
            EcKey::from_secret(EcKey::generate().secret().clone()),
        ] {
            assert!(key.has_aws_lc());
            let p256_public = encode_public_key(&key.secret().public_key()).unwrap();
            assert_eq!(key.public_key(), &p256_public);
            let peer = EcKey::generate();
            let a = P256::agree(&key, peer.public_key()).unwrap();
            let b = AwsLc::agree(&key, peer.public_key()).unwrap();
            let c = AwsLc::agree(&peer, key.public_key()).unwrap();
            assert_eq!(*a, *b);
            assert_eq!(*a, *c);
        }
    }

    #[test]
    fn fallback_without_aws_lc_form_still_agrees() {
        let mut key = EcKey::generate();
        let peer = EcKey::generate();
        let expected = AwsLc::agree(&key, peer.public_key()).unwrap();
        key.aws_lc = None;
        assert_eq!(*AwsLc::agree(&key, peer.public_key()).unwrap(), *expected);
    }
}
