//! The one send-and-parse loop behind [`check_in`](crate::check_in) and
//! [`register_with`](crate::register_with), and the end of their request builders.

use bytes::Bytes;
use fcm_http::{HttpClient, RetryPolicy};
use http::{Request, Response};

use crate::Error;

/// Sends `request` and parses each answer with `parse`, retrying the errors
/// `is_retryable` accepts as `retry` allows, never sooner than the server's `Retry-After`
/// asks ([`Error::retry_after`]). The very same request is repeated on each attempt.
pub(crate) async fn send_with_retry<C, T, P>(
    client: &C,
    request: Request<Bytes>,
    retry: &RetryPolicy,
    is_retryable: P,
    parse: impl Fn(&Response<Bytes>) -> Result<T, Error>,
) -> Result<T, Error>
where
    C: HttpClient + ?Sized,
    P: Fn(&Error) -> bool,
{
    let parse = &parse;
    retry
        .run_hinted(
            |_attempt| {
                let request = request.clone();
                async move { parse(&client.send(request).await?) }
            },
            is_retryable,
            Error::retry_after,
        )
        .await
}

/// The request `builder` describes, with `body`; a builder error (a bad header value)
/// is an [`fcm_http::Error::InvalidRequest`].
pub(crate) fn with_body(
    builder: http::request::Builder,
    body: Bytes,
) -> Result<Request<Bytes>, Error> {
    builder
        .body(body)
        .map_err(|e| fcm_http::Error::InvalidRequest(e.to_string()).into())
}
