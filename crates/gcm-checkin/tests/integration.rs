//! Integration tests of gcm-checkin, one module per former test file, built as one
//! test binary: one link and one executable instead of one per file.

mod checkin;
mod parsers;
mod register;
