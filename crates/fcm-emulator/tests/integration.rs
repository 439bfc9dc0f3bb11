//! Integration tests of fcm-emulator, one module per former test file, built as one
//! test binary: one link and one executable instead of one per file.

mod clients;
mod common;
mod http;
mod mcs;
mod topics;
mod webpush;
