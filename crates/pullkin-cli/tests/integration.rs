//! Integration tests of the pullkin CLI, one module per former test file, built as one
//! test binary: one link and one executable instead of one per file.

mod cli;
mod common;
mod fleet;
mod hostile;
mod listen;
mod registration;
mod reset;
mod service;
