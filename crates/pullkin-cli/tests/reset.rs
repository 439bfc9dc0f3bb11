//! `pullkin listen` when Google resets an identity (docs/protocol.md §7.1): the Instance
//! ID control message `RST` over MCS makes a new identity, the change is reported on
//! stderr, the new credentials are written back to the file, the control message is not
//! printed as a message, and a message to the new token arrives. The emulator runs in
//! this process; nothing touches the internet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use fcm_emulator::{IidCommand, SendMessage};
use pullkin::AppCredentials;
use serde_json::Value;

use crate::common::WAIT;
use crate::hostile::Env;

fn credentials(path: &Path) -> AppCredentials {
    AppCredentials::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Polls `check` every 10 ms until it gives a value (at most [`WAIT`]).
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_identity_reset_is_reported_and_written_back() {
    let env = Env::start();
    let file = env.register("web");
    let old = credentials(&file);
    let mut listener = env.listen(&[&file], &env.path("state"), &env.ca, &[]);
    listener.wait_stderr("[web] connected");
    let token = old.fcm.token().unwrap().to_owned();
    env.emulator
        .send(&token, &SendMessage::new().data("n", "1"))
        .unwrap();
    listener.wait_stdout(1);

    env.emulator
        .send_iid_command(old.gcm.token.as_str(), IidCommand::Rst)
        .unwrap();
    listener.wait_stderr("Google reset the identity");
    listener.wait_stderr("the device was registered again; new FCM token");
    // The file is written back after that line.
    let new = eventually("the new credentials written back", || {
        let new = credentials(&file);
        (new.gcm.android_id != old.gcm.android_id).then_some(new)
    });
    let new_token = new.fcm.token().unwrap().to_owned();
    assert_ne!(new_token, token);
    let id = new.gcm.android_id;
    eventually("logged in with the new identity", || {
        env.emulator.is_connected(id).then_some(())
    });
    env.emulator
        .send(&new_token, &SendMessage::new().data("n", "2"))
        .unwrap();
    listener.wait_stdout(2);
    assert!(listener.terminate());
    let lines: Vec<Value> = listener
        .stdout()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Two lines: the control message was not printed.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["data"]["n"], "1");
    assert_eq!(lines[1]["data"]["n"], "2");
}
