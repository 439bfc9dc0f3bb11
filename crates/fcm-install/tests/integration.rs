//! Integration tests of fcm-install, one module per former test file, built as one
//! test binary: one link and one executable instead of one per file.

mod installations;
mod parsers;
mod registrations;
