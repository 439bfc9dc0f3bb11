//! Parsing of the `Crypto-Key` and `Encryption` values that carry the `aesgcm` parameters.
//!
//! Both are lists of parameters separated by `,`, each a list of `name=value` pairs separated
//! by `;`, with optional whitespace around every token and optionally quoted values:
//!
//! ```text
//! Crypto-Key: keyid=p256dh; dh=BNoRDbb8…, p256ecdsa=BDd3_hVL…
//! Encryption: keyid=p256dh; salt="lngarbyKfMoi9Z75xYXmkg"; rs=4096
//! ```
//!
//! The salt and the record size come from the first `Encryption` parameter; the `dh` key from
//! the `Crypto-Key` parameter with the same `keyid`, or, without a `keyid`, from the first
//! parameter that has a `dh`. Values are base64, URL-safe or standard, padded or not (quoted
//! or not: unlike `ecec`, unquoted `=` padding is accepted because real senders emit it).

use crate::{Error, b64};

/// The default `aesgcm` record size when the `Encryption` header has no `rs`.
pub const DEFAULT_RS: u32 = 4096;
/// The smallest `aesgcm` record size: the 2-byte padding length and one byte of content.
pub const MIN_AESGCM_RS: u32 = 3;

/// The parameters of an `aesgcm` message, from its `Crypto-Key` and `Encryption` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesGcmParams {
    dh: Vec<u8>,
    salt: Vec<u8>,
    rs: u32,
}

impl AesGcmParams {
    /// Builds the parameters from their decoded values. Lengths are checked when decrypting.
    #[must_use]
    pub fn new(dh: impl Into<Vec<u8>>, salt: impl Into<Vec<u8>>, rs: u32) -> Self {
        Self {
            dh: dh.into(),
            salt: salt.into(),
            rs,
        }
    }

    /// Parses a `Crypto-Key` and an `Encryption` value.
    ///
    /// ```
    /// use webpush_ece::AesGcmParams;
    ///
    /// let p = AesGcmParams::parse("dh=\"BAAA\"; p256ecdsa=BBBB", "salt=AAAA;rs=24")?;
    /// assert_eq!((p.dh(), p.salt(), p.rs()), (&[4, 0, 0][..], &[0, 0, 0][..], 24));
    /// # Ok::<(), webpush_ece::Error>(())
    /// ```
    pub fn parse(crypto_key: &str, encryption: &str) -> Result<Self, Error> {
        let encryption = parse_header(encryption).ok_or(Error::InvalidEncryptionHeader)?;
        let first = encryption.first().ok_or(Error::InvalidEncryptionHeader)?;
        let (mut keyid, mut salt, mut rs) = (None, None, None);
        for pair in first {
            if pair.is("keyid") {
                if keyid.replace(pair.value).is_some() {
                    return Err(Error::InvalidEncryptionHeader);
                }
            } else if pair.is("salt") {
                let decoded = b64::decode(pair.value).ok_or(Error::InvalidSalt)?;
                if salt.replace(decoded).is_some() {
                    return Err(Error::InvalidEncryptionHeader);
                }
            } else if pair.is("rs") {
                let value = parse_rs(pair.value)?;
                if rs.replace(value).is_some() {
                    return Err(Error::InvalidEncryptionHeader);
                }
            }
        }
        let salt = salt.ok_or(Error::MissingParameter("salt"))?;
        let rs = rs.unwrap_or(DEFAULT_RS);

        let crypto_key = parse_header(crypto_key).ok_or(Error::InvalidCryptoKeyHeader)?;
        let dh = match keyid {
            Some(id) => crypto_key
                .iter()
                .find(|param| param.iter().any(|p| p.is("keyid") && p.value == id))
                .and_then(|param| param.iter().find(|p| p.is("dh")))
                .ok_or(Error::InvalidDh)?,
            None => crypto_key
                .iter()
                .find_map(|param| param.iter().find(|p| p.is("dh")))
                .ok_or(Error::MissingParameter("dh"))?,
        };
        let dh = b64::decode(dh.value).ok_or(Error::InvalidDh)?;
        Ok(Self { dh, salt, rs })
    }

    /// The sender's public key (`dh`), as decoded.
    #[must_use]
    pub fn dh(&self) -> &[u8] {
        &self.dh
    }

    /// The salt, as decoded.
    #[must_use]
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The record size (plaintext bytes per record, 2-byte padding length included).
    #[must_use]
    pub fn rs(&self) -> u32 {
        self.rs
    }
}

fn parse_rs(value: &str) -> Result<u32, Error> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidRecordSize);
    }
    let rs: u32 = value.parse().map_err(|_| Error::InvalidRecordSize)?;
    if rs < MIN_AESGCM_RS {
        return Err(Error::InvalidRecordSize);
    }
    Ok(rs)
}

/// One `name=value` pair, borrowed from the header.
#[derive(Debug, Clone, Copy)]
struct Pair<'a> {
    name: &'a str,
    value: &'a str,
}

impl Pair<'_> {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/')
}

/// Splits a header value into parameters of pairs; `None` if it is not well formed.
fn parse_header(input: &str) -> Option<Vec<Vec<Pair<'_>>>> {
    let bytes = input.as_bytes();
    let at = |i: usize| bytes.get(i).copied();
    let skip_space = |mut i: usize| {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        i
    };
    let mut params = Vec::new();
    let mut pairs = Vec::new();
    let mut i = 0;
    loop {
        i = skip_space(i);
        let name_start = i;
        while at(i).is_some_and(is_name) {
            i += 1;
        }
        let name = input.get(name_start..i).filter(|n| !n.is_empty())?;
        i = skip_space(i);
        if at(i) != Some(b'=') {
            return None;
        }
        i = skip_space(i + 1);
        let value = if at(i) == Some(b'"') {
            let start = i + 1;
            i = start;
            while at(i).is_some_and(|b| is_base64(b) || b == b'=') {
                i += 1;
            }
            let value = input.get(start..i).filter(|v| !v.is_empty())?;
            if at(i) != Some(b'"') {
                return None;
            }
            i += 1;
            value
        } else {
            let start = i;
            while at(i).is_some_and(is_base64) {
                i += 1;
            }
            if i == start {
                return None;
            }
            while at(i) == Some(b'=') {
                i += 1;
            }
            input.get(start..i)?
        };
        pairs.push(Pair { name, value });
        i = skip_space(i);
        match at(i) {
            None => {
                params.push(pairs);
                return Some(params);
            }
            Some(b';') => i += 1,
            Some(b',') => {
                params.push(core::mem::take(&mut pairs));
                i += 1;
            }
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_params_and_pairs() {
        let parsed = parse_header(" a = \"b=\" ;c=d,e=f").unwrap_or_default();
        let shape: Vec<Vec<(&str, &str)>> = parsed
            .iter()
            .map(|p| p.iter().map(|x| (x.name, x.value)).collect())
            .collect();
        assert_eq!(shape, vec![vec![("a", "b="), ("c", "d")], vec![("e", "f")]]);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", " ", "a", "a=", "a=;", "=b", "a=b;", ",a=b", "a=\"\"", "a=\"b", "a==b", "a=b c",
        ] {
            assert!(parse_header(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_case_insensitive_and_padding_accepted() {
        let p = AesGcmParams::parse("DH=BAA=", "Salt=AAAA;RS=10").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.dh(), p.salt(), p.rs()),
            (&[4, 0][..], &[0, 0, 0][..], 10)
        );
    }
}
