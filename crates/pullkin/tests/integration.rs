//! Integration tests of pullkin, one module per former test file, built as one
//! test binary: one link and one executable instead of one per file.

mod core_emulator;
mod core_wiremock;
mod credentials_import;
mod endpoints;
mod listener;
mod listener_core;
mod metadata;
mod reconnect;
mod registration_emulator;
mod registration_ops;
mod reset;
mod session;
mod store;
mod stored_ids;
mod support;
