//! The response parsers never panic, whatever the bytes or status.

#![allow(clippy::unwrap_used)]

use std::time::SystemTime;

use bytes::Bytes;
use fcm_install::{
    parse_auth_token_response, parse_create_installation_response,
    parse_create_registration_response, parse_delete_registration_response, parse_google_duration,
};
use proptest::prelude::*;

fn response(status: u16, body: Vec<u8>) -> http::Response<Bytes> {
    http::Response::builder()
        .status(status)
        .body(Bytes::from(body))
        .unwrap()
}

proptest! {
    #[test]
    fn parsers_never_panic_on_bytes(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..512)) {
        let r = response(status, body);
        let _ = parse_create_installation_response(&r, "cAAAAAAAAAAAAAAAAAAAAA", SystemTime::now());
        let _ = parse_auth_token_response(&r, SystemTime::now());
        let _ = parse_create_registration_response(&r);
        let _ = parse_delete_registration_response(&r);
    }

    #[test]
    fn parsers_never_panic_on_near_json(
        status in prop::sample::select(vec![200u16, 400, 500]),
        token in ".{0,20}",
        expires in ".{0,24}",
        code in any::<i64>(),
    ) {
        let bodies = [
            serde_json::json!({"refreshToken": token, "authToken": {"token": token, "expiresIn": expires}}),
            serde_json::json!({"token": token, "expiresIn": expires}),
            serde_json::json!({"name": token, "token": token}),
            serde_json::json!({"error": {"code": code, "message": token, "status": expires}}),
        ];
        for body in bodies {
            let r = response(status, serde_json::to_vec(&body).unwrap());
            let _ = parse_create_installation_response(&r, "f", SystemTime::UNIX_EPOCH);
            let _ = parse_auth_token_response(&r, SystemTime::now());
            let _ = parse_create_registration_response(&r);
        }
    }

    #[test]
    fn durations_never_panic(text in ".{0,40}") {
        let _ = parse_google_duration(&text);
    }

    #[test]
    fn huge_durations_are_errors_not_panics(secs in any::<u64>()) {
        let body = serde_json::json!({"token": "t", "expiresIn": format!("{secs}s")});
        let r = response(200, serde_json::to_vec(&body).unwrap());
        let _ = parse_auth_token_response(&r, SystemTime::now());
    }
}
