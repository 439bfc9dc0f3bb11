//! Integration tests of the workspace (end to end), one module per former test file, built as one
//! test binary: one link and one executable instead of one per file.

mod hostile;
mod pipeline;
mod secrets;
