//! VAPID (RFC 8292) for the Web Push endpoint (docs/protocol.md §7.5): the check of a
//! push's `Authorization`, and [`VapidKey`], which signs one, for tests and senders.
//!
//! ES256 through `ring` (already the TLS provider of the crate). Uses only `error`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::json;

use crate::error::Error;

/// The latest `exp` a JWT may carry: 24 hours ahead (RFC 8292 §2).
pub(crate) const MAX_EXP_AHEAD: u64 = 24 * 60 * 60;
/// How far ahead [`VapidKey::authorization`] sets `exp`: 12 hours, as the usual Web Push
/// libraries do.
const DEFAULT_EXP_AHEAD: u64 = 12 * 60 * 60;

/// A VAPID key pair (P-256) that signs the `Authorization` of Web Push requests
/// (RFC 8292), for tests of the Web Push endpoint and for senders:
///
/// ```
/// let key = fcm_emulator::VapidKey::generate()?;
/// let authorization = key.authorization("https://127.0.0.1:4443/fcm/send/TOKEN")?;
/// assert!(authorization.starts_with("vapid t="));
/// assert!(authorization.ends_with(&format!(", k={}", key.public_key_base64())));
/// # Ok::<(), fcm_emulator::Error>(())
/// ```
///
/// A subscription made with an application server key (the web persona's register3
/// `sender`, or `applicationPubKey` of the FCM registration) takes only pushes signed by
/// that key; one made with Chrome's default key takes any valid signature.
pub struct VapidKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A fresh random key pair.
    pub fn generate() -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| Error::InvalidInput("cannot generate a P-256 key".into()))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A key pair from its PKCS#8 (DER) encoding, as [`VapidKey::pkcs8`] gives it.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| Error::InvalidInput(format!("not a P-256 PKCS#8 key: {e}")))?;
        Ok(Self {
            pair,
            pkcs8: pkcs8.to_vec(),
            rng,
        })
    }

    /// The private key, PKCS#8 (DER).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key, uncompressed (65 bytes), base64url without padding: what a
    /// subscription names as its application server key and `k=` carries.
    pub fn public_key_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    /// Signs a JWT (`{"typ":"JWT","alg":"ES256"}`) with these claims, as they are.
    pub fn jwt(&self, claims: &serde_json::Value) -> Result<String, Error> {
        let header = URL_SAFE_NO_PAD.encode(json!({ "typ": "JWT", "alg": "ES256" }).to_string());
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let signature = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| Error::InvalidInput("ECDSA signing failed".into()))?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// `vapid t=<JWT>, k=<public key>` for a push to `endpoint`: `aud` its origin,
    /// `exp` 12 hours from now (on the system clock), `sub` a `mailto:` contact.
    pub fn authorization(&self, endpoint: &str) -> Result<String, Error> {
        let url = url::Url::parse(endpoint)
            .map_err(|e| Error::InvalidInput(format!("push endpoint {endpoint:?}: {e}")))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = json!({
            "aud": url.origin().ascii_serialization(),
            "exp": now + DEFAULT_EXP_AHEAD,
            "sub": "mailto:push@example.invalid",
        });
        Ok(self.authorization_for(&self.jwt(&claims)?))
    }

    /// `vapid t=<jwt>, k=<this public key>` for a JWT made with [`VapidKey::jwt`].
    pub fn authorization_for(&self, jwt: &str) -> String {
        format!("vapid t={jwt}, k={}", self.public_key_base64())
    }
}

/// Why a push's VAPID authorization was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No `Authorization` in a VAPID scheme (401).
    Missing,
    /// Present but not acceptable (403), with the reason.
    Invalid(String),
}

fn invalid(reason: impl Into<String>) -> Refusal {
    Refusal::Invalid(reason.into())
}

/// Decodes base64 in any of its variants.
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .ok()
}

/// Decodes an uncompressed P-256 public key (65 bytes, `0x04` first).
pub(crate) fn decode_key(text: &str) -> Option<Vec<u8>> {
    decode_b64(text).filter(|k| k.len() == 65 && k[0] == 4)
}

/// The JWT and public key of an `Authorization` (`vapid t=…, k=…`, RFC 8292), or of the
/// older `WebPush <jwt>` with `Crypto-Key: p256ecdsa=<key>`.
fn credentials(
    authorization: Option<&str>,
    crypto_key: Option<&str>,
) -> Result<(String, String), Refusal> {
    let value = authorization.ok_or(Refusal::Missing)?.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("vapid") {
        let mut t = None;
        let mut k = None;
        for param in rest.split(',') {
            match param.trim().split_once('=') {
                Some(("t", v)) => t = Some(v.trim().to_owned()),
                Some(("k", v)) => k = Some(v.trim().to_owned()),
                _ => {}
            }
        }
        return match (t, k) {
            (Some(t), Some(k)) => Ok((t, k)),
            _ => Err(invalid("the vapid authorization needs t= and k=")),
        };
    }
    if scheme.eq_ignore_ascii_case("webpush") {
        let key = crypto_key
            .into_iter()
            .flat_map(|v| v.split([';', ',']))
            .find_map(|param| param.trim().strip_prefix("p256ecdsa="))
            .map(|k| k.trim_matches('"').to_owned())
            .ok_or_else(|| invalid("WebPush authorization without Crypto-Key p256ecdsa="))?;
        return Ok((rest.trim().to_owned(), key));
    }
    Err(Refusal::Missing)
}

/// Checks a push's VAPID authorization (docs/protocol.md §7.5): an ES256 JWT signed by
/// the key `k`, `aud` one of `origins`, `exp` after `now` and at most 24 hours ahead, and
/// `k` the subscription's key when it has one (`bound_key`).
pub(crate) fn check(
    authorization: Option<&str>,
    crypto_key: Option<&str>,
    origins: &[String],
    bound_key: Option<&[u8]>,
    now: u64,
) -> Result<(), Refusal> {
    let (jwt, key) = credentials(authorization, crypto_key)?;
    let key = decode_key(&key).ok_or_else(|| invalid("k is not a P-256 public key"))?;
    if bound_key.is_some_and(|bound| bound != key.as_slice()) {
        return Err(invalid(
            "the key is not the subscription's application server key",
        ));
    }
    let mut parts = jwt.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("the JWT does not have three parts"));
    };
    let decode_json = |part: &str| {
        decode_b64(part)
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .filter(serde_json::Value::is_object)
    };
    let header_json = decode_json(header).ok_or_else(|| invalid("the JWT header is not JSON"))?;
    if header_json["alg"] != "ES256" {
        return Err(invalid("the JWT is not ES256"));
    }
    let claims_json = decode_json(claims).ok_or_else(|| invalid("the JWT claims are not JSON"))?;
    let signature = decode_b64(signature).ok_or_else(|| invalid("the signature is not base64"))?;
    let input = jwt
        .get(..header.len() + 1 + claims.len())
        .ok_or_else(|| invalid("the JWT does not have three parts"))?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key)
        .verify(input.as_bytes(), &signature)
        .map_err(|_| invalid("the JWT signature does not verify"))?;
    let aud = claims_json["aud"].as_str().unwrap_or_default();
    if !origins.iter().any(|o| o == aud) {
        return Err(invalid(format!(
            "aud {aud:?} is not the origin of the push endpoint"
        )));
    }
    let Some(exp) = claims_json["exp"].as_u64() else {
        return Err(invalid("the JWT has no numeric exp"));
    };
    if exp <= now {
        return Err(invalid("the JWT has expired"));
    }
    if exp - now > MAX_EXP_AHEAD {
        return Err(invalid("exp is more than 24 hours ahead"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ORIGIN: &str = "https://127.0.0.1:4443";

    fn origins() -> Vec<String> {
        vec![ORIGIN.to_owned()]
    }

    #[test]
    fn signs_what_it_checks() {
        let key = VapidKey::generate().unwrap();
        let now = 1_700_000_000;
        let good = key.authorization_for(
            &key.jwt(&json!({ "aud": ORIGIN, "exp": now + 3600 }))
                .unwrap(),
        );
        assert_eq!(check(Some(&good), None, &origins(), None, now), Ok(()));
        let bound = decode_key(&key.public_key_base64()).unwrap();
        assert_eq!(
            check(Some(&good), None, &origins(), Some(&bound), now),
            Ok(())
        );
        let other = VapidKey::generate().unwrap();
        let other_bound = decode_key(&other.public_key_base64()).unwrap();
        assert!(matches!(
            check(Some(&good), None, &origins(), Some(&other_bound), now),
            Err(Refusal::Invalid(_))
        ));
        // The key round-trips through PKCS#8.
        let again = VapidKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.public_key_base64(), key.public_key_base64());
        // The older WebPush scheme.
        let jwt = key.jwt(&json!({ "aud": ORIGIN, "exp": now + 60 })).unwrap();
        let crypto_key = format!("dh=abc;p256ecdsa={}", key.public_key_base64());
        assert_eq!(
            check(
                Some(&format!("WebPush {jwt}")),
                Some(&crypto_key),
                &origins(),
                None,
                now
            ),
            Ok(())
        );
    }

    #[test]
    fn refusals() {
        let key = VapidKey::generate().unwrap();
        let now = 1_700_000_000;
        let with = |claims: serde_json::Value| {
            check(
                Some(&key.authorization_for(&key.jwt(&claims).unwrap())),
                None,
                &origins(),
                None,
                now,
            )
        };
        assert_eq!(
            check(None, None, &origins(), None, now),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(Some("key=AAAA"), None, &origins(), None, now),
            Err(Refusal::Missing)
        );
        for bad in [
            json!({ "aud": "https://other.example", "exp": now + 60 }),
            json!({ "exp": now + 60 }),
            json!({ "aud": ORIGIN, "exp": now }),
            json!({ "aud": ORIGIN, "exp": now - 1 }),
            json!({ "aud": ORIGIN, "exp": now + MAX_EXP_AHEAD + 1 }),
            json!({ "aud": ORIGIN, "exp": "soon" }),
            json!({ "aud": ORIGIN }),
        ] {
            assert!(
                matches!(with(bad.clone()), Err(Refusal::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(
            with(json!({ "aud": ORIGIN, "exp": now + MAX_EXP_AHEAD })),
            Ok(())
        );
        // A tampered claim breaks the signature.
        let jwt = key.jwt(&json!({ "aud": ORIGIN, "exp": now + 60 })).unwrap();
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({ "aud": ORIGIN, "exp": now + 120 }).to_string());
        parts[1] = &forged;
        let tampered = key.authorization_for(&parts.join("."));
        assert!(matches!(
            check(Some(&tampered), None, &origins(), None, now),
            Err(Refusal::Invalid(_))
        ));
        for garbage in [
            "vapid t=a.b.c, k=zzz".to_owned(),
            format!("vapid t=a.b, k={}", key.public_key_base64()),
            format!("vapid k={}", key.public_key_base64()),
            format!("vapid t=!!.??.**, k={}", key.public_key_base64()),
            "WebPush abc".to_owned(),
        ] {
            assert!(
                matches!(
                    check(Some(&garbage), None, &origins(), None, now),
                    Err(Refusal::Invalid(_))
                ),
                "{garbage}"
            );
        }
        // Another algorithm in the header.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let claims = URL_SAFE_NO_PAD.encode(json!({ "aud": ORIGIN, "exp": now + 60 }).to_string());
        let none = key.authorization_for(&format!("{header}.{claims}."));
        assert!(matches!(
            check(Some(&none), None, &origins(), None, now),
            Err(Refusal::Invalid(_))
        ));
    }
}
