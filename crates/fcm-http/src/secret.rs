//! [`Secret`], the one wrapper for secrets (tokens, keys) of the pullkin crates: redacted
//! in `Debug`, wiped from memory on drop, serialized as the bare value.
//!
//! The `secrecy` crate (0.10) was considered and is not used: its `SecretString` has no
//! `Serialize` (by design, and the orphan rule forbids opting `String` or `str` in from
//! here), no `PartialEq`/`Eq`/`Hash`, and prints `SecretBox<str>([REDACTED])`, while
//! credential files must be written with the bare value and stored credentials compared.
//! This type is the few lines that do exactly that, on the same `zeroize` crate.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

/// A secret value (a token, a key). `Debug` prints `<redacted>`; the memory is zeroized
/// when it is dropped. Serialized as the bare value, for credential files.
///
/// ```
/// use fcm_http::Secret;
/// let token = Secret::new(String::from("eyJhbGciOi.secret"));
/// assert_eq!(format!("{token:?}"), "<redacted>");
/// assert_eq!(token.expose(), "eyJhbGciOi.secret");
/// assert_eq!(serde_json::to_string(&token).unwrap(), r#""eyJhbGciOi.secret""#);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself; handle with care.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T: Zeroize + Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Zeroize + Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    #[test]
    fn debug_is_redacted_even_inside_other_types() {
        let secret = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret:#?}"), "<redacted>");
        let shown = format!("{:?}", Some(vec![secret]));
        assert_eq!(shown, "Some([<redacted>])");
    }

    #[test]
    fn constructors_and_expose() {
        let a = Secret::new(String::from("k"));
        let b: Secret<String> = String::from("k").into();
        assert_eq!(a, b);
        assert_eq!(a.expose(), "k");
        assert_eq!(a.clone(), a);
        assert_ne!(a, Secret::from(String::from("other")));
        assert_eq!(Secret::<String>::default().expose(), "");
        assert_eq!(Secret::new([1u8, 2, 3]).expose(), &[1, 2, 3]);
    }

    #[test]
    fn serde_is_transparent() {
        let secret = Secret::new(String::from("2_refresh"));
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, r#""2_refresh""#);
        let back: Secret<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, secret);
        let bytes: Secret<Vec<u8>> = serde_json::from_str("[1,2]").unwrap();
        assert_eq!(bytes.expose(), &[1, 2]);
    }

    #[test]
    fn the_same_secret_hashes_as_its_value() {
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        assert_eq!(
            hasher.hash_one(Secret::new(String::from("t"))),
            hasher.hash_one(String::from("t"))
        );
    }

    /// A value that records when it is zeroized.
    struct Recorder(Rc<Cell<u32>>);

    impl Zeroize for Recorder {
        fn zeroize(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn dropping_zeroizes_once() {
        let wiped = Rc::new(Cell::new(0));
        let secret = Secret::new(Recorder(Rc::clone(&wiped)));
        assert_eq!(wiped.get(), 0);
        drop(secret);
        assert_eq!(wiped.get(), 1);
    }

    #[test]
    fn zeroizing_a_string_clears_it() {
        // What the drop of a `Secret<String>` does to the value it holds.
        let mut value = String::from("secret");
        value.zeroize();
        assert!(value.is_empty());
    }
}
