//! Integration tests of pullkin-fleet against a real PostgreSQL (never a mock), one
//! module per subject, built as one test binary. Each test makes a database of its own
//! (`pullkin_test_<random>`) on the server `PULLKIN_TEST_DATABASE_URL` names (default
//! `postgres://postgres@127.0.0.1:5432/test`) and drops it at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod consumers;
mod e2e;
mod encryption;
mod leases;
mod migrations;
mod store;
mod support;
