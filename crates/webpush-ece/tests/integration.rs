//! Integration tests of webpush-ece, one module per former test file, built as one
//! test binary: one link and one executable instead of one per file.

mod backends;
mod differential;
mod header_only;
mod keys;
mod proptests;
mod vectors;
