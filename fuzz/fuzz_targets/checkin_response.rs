//! The check-in and register3 response parsers on arbitrary answers: never a panic.
//! The first byte picks the status and content type, the second whether the check-in
//! was a re-check-in; the rest is the body.

#![no_main]

use bytes::Bytes;
use gcm_checkin::{
    CheckinCredentials, CheckinRequest, parse_checkin_response, parse_register_response,
};
use libfuzzer_sys::fuzz_target;

const STATUSES: [u16; 8] = [200, 201, 400, 401, 403, 404, 429, 503];
const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/x-protobuf"),
    Some("text/html; charset=UTF-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let (selector, flags, body) = match data {
        [selector, flags, body @ ..] => (*selector, *flags, body),
        _ => return,
    };
    let status = STATUSES[usize::from(selector & 7)];
    let content_type = CONTENT_TYPES[usize::from((selector >> 3) & 3)];
    let mut builder = http::Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    let Ok(response) = builder.body(Bytes::copy_from_slice(body)) else {
        return;
    };
    let request = if flags & 1 == 1 {
        CheckinRequest::recheck(CheckinCredentials::new(1, 2))
    } else {
        CheckinRequest::new_device()
    };
    if let Ok(parsed) = parse_checkin_response(&request, &response) {
        assert_ne!(parsed.credentials.android_id, 0);
        assert_ne!(parsed.credentials.security_token.expose(), 0);
    }
    if let Ok(token) = parse_register_response(&response) {
        assert!(!token.as_str().is_empty());
    }
});
