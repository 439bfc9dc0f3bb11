//! The response parsers never panic, whatever the bytes, status or headers.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use gcm_checkin::{
    CheckinCredentials, CheckinRequest, parse_checkin_response, parse_register_response,
};
use proptest::prelude::*;

fn response(status: u16, content_type: Option<&str>, body: Vec<u8>) -> http::Response<Bytes> {
    let mut builder = http::Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder.body(Bytes::from(body)).unwrap()
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(prop::sample::select(vec![
        "application/x-protobuf",
        "text/html; charset=UTF-8",
        "text/plain",
    ]))
}

proptest! {
    #[test]
    fn checkin_parser_never_panics(
        status in 100u16..600,
        ct in content_type(),
        body in prop::collection::vec(any::<u8>(), 0..512),
        recheck in any::<bool>(),
    ) {
        let request = if recheck {
            CheckinRequest::recheck(CheckinCredentials::new(1, 2))
        } else {
            CheckinRequest::new_device()
        };
        let _ = parse_checkin_response(&request, &response(status, ct, body));
    }

    #[test]
    fn register_parser_never_panics(
        status in 100u16..600,
        ct in content_type(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = parse_register_response(&response(status, ct, body));
    }

    #[test]
    fn register_parser_never_panics_on_near_misses(
        prefix in prop::sample::select(vec!["token=", "Error=", "<", " token=", "TOKEN="]),
        rest in ".{0,80}",
        status in prop::sample::select(vec![200u16, 404, 500]),
    ) {
        let body = format!("{prefix}{rest}").into_bytes();
        let _ = parse_register_response(&response(status, None, body));
    }

    #[test]
    fn any_valid_token_round_trips(token in "[A-Za-z0-9_:-]{1,200}") {
        let parsed = parse_register_response(&response(200, None, format!("token={token}").into_bytes())).unwrap();
        prop_assert_eq!(parsed.as_str(), token.as_str());
    }
}
