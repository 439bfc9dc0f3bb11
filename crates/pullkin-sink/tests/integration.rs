//! Integration tests of the sinks against real servers: a NATS server with JetStream
//! (started by the tests from the installed `nats-server`), a local HTTPS server, and
//! `fcm-emulator`.

mod file;
mod nats;
mod webhook;
