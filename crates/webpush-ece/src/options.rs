//! Knobs of the encrypt side.

/// The default record size of both encodings (`rs`).
pub const DEFAULT_RECORD_SIZE: u32 = 4096;

/// How to lay a message out in records: the record size and how much padding to add.
///
/// The record size means what each encoding means by it: for `aes128gcm` the size of an
/// encrypted record including its 16-byte tag (at least 18); for `aesgcm` the size of a
/// plaintext record including its 2-byte padding length (at least 3).
///
/// ```
/// use webpush_ece::EncryptOptions;
///
/// let opts = EncryptOptions::new().record_size(25).padding(100);
/// assert_eq!((opts.rs(), opts.pad()), (25, 100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptOptions {
    rs: u32,
    pad: usize,
}

impl EncryptOptions {
    /// Record size 4096, no padding.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            rs: DEFAULT_RECORD_SIZE,
            pad: 0,
        }
    }

    /// Sets the record size.
    #[must_use]
    pub const fn record_size(mut self, rs: u32) -> Self {
        self.rs = rs;
        self
    }

    /// Sets the total number of padding bytes, spread over the records as needed.
    #[must_use]
    pub const fn padding(mut self, pad: usize) -> Self {
        self.pad = pad;
        self
    }

    /// The record size.
    #[must_use]
    pub const fn rs(&self) -> u32 {
        self.rs
    }

    /// The total padding length.
    #[must_use]
    pub const fn pad(&self) -> usize {
        self.pad
    }
}

impl Default for EncryptOptions {
    fn default() -> Self {
        Self::new()
    }
}
