//! The hyper + rustls client against local servers: wiremock over plain HTTP, and a
//! tiny TLS server with a test CA (tests/fixtures, valid until 2126).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fcm_http::{Client, Error, HttpClient, RequestTimeout, RetryPolicy};
use http::{Method, Request, StatusCode};
use pullkin_test_support::{client_with_timeout, failing_then_answering, read_request_head};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use wiremock::matchers::{body_bytes, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CA_PEM: &[u8] = include_bytes!("fixtures/ca.pem");
const SERVER_PEM: &[u8] = include_bytes!("fixtures/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("fixtures/server.key");

fn post(url: String, body: &'static [u8]) -> Request<Bytes> {
    Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/octet-stream")
        .body(Bytes::from_static(body))
        .unwrap()
}

#[tokio::test]
async fn sends_the_request_and_returns_any_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/echo"))
        .and(header("content-type", "application/octet-stream"))
        .and(body_bytes(b"\x00\x01binary".to_vec()))
        .respond_with(
            ResponseTemplate::new(418)
                .insert_header("x-reply", "yes")
                .set_body_bytes(b"teapot".to_vec()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let response = client_with_timeout(Duration::from_secs(5))
        .send(post(format!("{}/echo", server.uri()), b"\x00\x01binary"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(response.headers()["x-reply"], "yes");
    assert_eq!(response.body().as_ref(), b"teapot");
}

#[tokio::test]
async fn slow_server_times_out_and_request_timeout_overrides() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(800)))
        .mount(&server)
        .await;
    let client = client_with_timeout(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let err = client.send(post(server.uri(), b"")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(700), "{err}");
    match &err {
        Error::Timeout { after, .. } => assert_eq!(*after, Duration::from_millis(100)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.is_timeout() && err.is_transient());

    // A longer per-request timeout lets the same slow answer through.
    let mut request = post(server.uri(), b"");
    request
        .extensions_mut()
        .insert(RequestTimeout(Duration::from_secs(5)));
    assert_eq!(client.send(request).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 2048]))
        .mount(&server)
        .await;
    let client = Client::builder().max_response_bytes(1024).build().unwrap();
    let err = client.send(post(server.uri(), b"")).await.unwrap_err();
    assert!(
        matches!(err, Error::BodyTooLarge { limit: 1024 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = client_with_timeout(Duration::from_secs(5))
        .send(post(format!("http://127.0.0.1:{port}/"), b""))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn https_only_refuses_plain_http_and_odd_schemes_are_refused() {
    let client = Client::builder().https_only(true).build().unwrap();
    let err = client
        .send(post("http://127.0.0.1:9/".into(), b""))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    let err = Client::new()
        .unwrap()
        .send(post("ftp://127.0.0.1:9/".into(), b""))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
}

#[tokio::test]
async fn retry_policy_with_the_client_retries_5xx_only() {
    let fine = ResponseTemplate::new(200).set_body_string("fine");
    let server =
        failing_then_answering("POST", "/flaky", ResponseTemplate::new(503), 2, fine).await;
    let client = client_with_timeout(Duration::from_secs(5));
    let policy = RetryPolicy::default()
        .with_max_attempts(5)
        .with_initial_delay(Duration::from_millis(1));
    let request = post(format!("{}/flaky", server.uri()), b"");
    let mut attempts = 0;
    let response = policy
        .run(
            |_| {
                attempts += 1;
                let (client, request) = (&client, request.clone());
                async move {
                    let response = client.send(request).await?;
                    if response.status().is_success() {
                        Ok(response)
                    } else {
                        Err(Error::status(&response))
                    }
                }
            },
            Error::is_transient,
        )
        .await
        .unwrap();
    assert_eq!(response.body().as_ref(), b"fine");
    assert_eq!(attempts, 3);
}

#[test]
fn root_certificate_configuration_errors() {
    let err = Client::builder()
        .add_root_certificates_pem(b"not a pem")
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let err = Client::builder().webpki_roots(false).build().unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let err = Client::builder()
        .webpki_roots(false)
        .add_root_certificate_der(b"garbage".to_vec())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

/// A one-route HTTPS server with the test CA's certificate; answers `200 hello` to all.
async fn tls_server() -> String {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(SERVER_PEM)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if read_request_head(&mut tls).await.is_none() {
                    return;
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://127.0.0.1:{}/", addr.port())
}

#[tokio::test]
async fn tls_with_an_added_root_certificate() {
    let url = tls_server().await;
    let client = Client::builder()
        .add_root_certificates_pem(CA_PEM)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = client.send(post(url.clone(), b"")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().as_ref(), b"hello");

    // The same CA as DER, with no webpki roots at all.
    let der = CertificateDer::from_pem_slice(CA_PEM).unwrap();
    let only_ca = Client::builder()
        .webpki_roots(false)
        .add_root_certificate_der(der.to_vec())
        .build()
        .unwrap();
    assert_eq!(
        only_ca.send(post(url, b"")).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn tls_with_an_unknown_issuer_is_a_tls_error() {
    let url = tls_server().await;
    let err = client_with_timeout(Duration::from_secs(5))
        .send(post(url, b""))
        .await
        .unwrap_err();
    match &err {
        Error::Tls { source, .. } => assert!(
            matches!(source, rustls::Error::InvalidCertificate(_)),
            "{source:?}"
        ),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn the_tls_config_is_shared_not_copied() {
    let client = Client::new().unwrap();
    let clone = client.clone();
    assert!(Arc::ptr_eq(client.tls_config(), clone.tls_config()));
    assert!(client.tls_config().alpn_protocols.is_empty());
    let shared = Arc::clone(client.tls_config());
    let other = Client::builder()
        .tls_config(Arc::clone(&shared))
        .build()
        .unwrap();
    assert!(Arc::ptr_eq(other.tls_config(), &shared));
}

#[tokio::test]
async fn the_trait_is_object_safe_and_pluggable() {
    struct Canned;
    impl HttpClient for Canned {
        fn send(
            &self,
            _request: Request<Bytes>,
        ) -> fcm_http::BoxFuture<'_, Result<http::Response<Bytes>, Error>> {
            Box::pin(async { Ok(http::Response::new(Bytes::from_static(b"canned"))) })
        }
    }
    let boxed: Box<dyn HttpClient> = Box::new(Canned);
    let arc: Arc<dyn HttpClient> = Arc::new(Canned);
    for c in [&boxed as &dyn HttpClient, &arc] {
        let r = c.send(post("http://x/".into(), b"")).await.unwrap();
        assert_eq!(r.body().as_ref(), b"canned");
    }
}

/// A fake proxy that answers the first connection's request head with `answer`, then
/// closes (or, with `None`, never answers). Returns its address.
async fn fake_proxy(answer: Option<&'static [u8]>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        if read_request_head(&mut tcp).await.is_none() {
            return;
        }
        match answer {
            Some(answer) => {
                let _ = tcp.write_all(answer).await;
                let _ = tcp.shutdown().await;
            }
            None => std::future::pending::<()>().await,
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn proxy_refusals_and_misbehaviour_are_clear_errors() {
    use std::io::ErrorKind;
    let through = |url: String, timeout: Duration| async move {
        let proxy = fcm_http::Proxy::parse(&url).unwrap();
        fcm_http::connect_through(&proxy, "mtalk.google.com", 5228, timeout).await
    };
    let second = Duration::from_secs(5);
    let cases: [(&'static [u8], ErrorKind, &str); 5] = [
        (
            b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 13\r\n\r\n<html></html>",
            ErrorKind::ConnectionRefused,
            "407 Proxy Authentication Required",
        ),
        (
            b"HTTP/1.1 403 Forbidden\r\n\r\n",
            ErrorKind::ConnectionRefused,
            "403 Forbidden",
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\nsurprise",
            ErrorKind::InvalidData,
            "after its CONNECT answer",
        ),
        (
            b"SSH-2.0-OpenSSH\r\n\r\n",
            ErrorKind::ConnectionRefused,
            "SSH-2.0",
        ),
        (
            b"HTTP/1.1 200 Conn",
            ErrorKind::UnexpectedEof,
            "closed the connection",
        ),
    ];
    for (answer, kind, needle) in cases {
        let err = through(fake_proxy(Some(answer)).await, second)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let err = through(fake_proxy(None).await, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    // The answer that opens the tunnel leaves the stream to the caller.
    let stream = through(
        fake_proxy(Some(
            b"HTTP/1.0 200 Connection established\r\nVia: test\r\n\r\n",
        ))
        .await,
        second,
    )
    .await
    .unwrap();
    assert!(stream.peer_addr().is_ok());

    // Plain http:// is not sent through a proxy (a tunnel to port 80 is refused by most,
    // and a local address would be the proxy's).
    let client = Client::builder()
        .proxy(Some(fcm_http::Proxy::parse("http://127.0.0.1:9").unwrap()))
        .build()
        .unwrap();
    let err = client
        .send(post("http://127.0.0.1:9/x".into(), b""))
        .await
        .unwrap_err();
    let message = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(message.contains("plain http://"), "{message}");
}

/// A fake proxy that records each connection's request head and refuses the tunnel
/// with `403 Forbidden`. Returns its address and the heads.
async fn refusing_proxy() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let Some(head) = read_request_head(&mut tcp).await else {
                continue;
            };
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = tcp.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
            let _ = tcp.shutdown().await;
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn the_environments_proxy_is_taken_per_host() {
    let (proxy, heads) = refusing_proxy().await;
    let env = {
        let proxy = format!("http://user:pass@{proxy}");
        move |name: &str| match name {
            "HTTPS_PROXY" => Some(proxy.clone()),
            "HTTP_PROXY" => Some("http://127.0.0.1:9".to_owned()),
            "NO_PROXY" => Some("direct.example".to_owned()),
            _ => None,
        }
    };
    let client = Client::builder()
        .add_root_certificates_pem(CA_PEM)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .proxy_env(fcm_http::ProxyEnv::from_vars(env.clone()))
        .build()
        .unwrap();
    // A remote host goes through the proxy (which refuses it here: no request leaves
    // this machine), with the environment URL's credentials.
    let err = client
        .send(post("https://fcm.example/v1".into(), b""))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let message = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(message.contains("403 Forbidden"), "{message}");
    {
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].starts_with("CONNECT fcm.example:443 HTTP/1.1\r\n"),
            "{heads:?}"
        );
        // base64("user:pass")
        assert!(
            heads[0].contains("Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"),
            "{heads:?}"
        );
    }
    // A loopback host is reached directly.
    let url = tls_server().await;
    let response = client.send(post(url, b"")).await.unwrap();
    assert_eq!(response.body().as_ref(), b"hello");
    // Plain http:// to a remote host would take HTTP_PROXY: refused, with a hint.
    let err = client
        .send(post("http://fake.example/".into(), b""))
        .await
        .unwrap_err();
    let message = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        message.contains("plain http://") && message.contains("NO_PROXY"),
        "{message}"
    );
    assert_eq!(
        heads.lock().unwrap().len(),
        1,
        "nothing more reached the proxy"
    );

    // An explicit proxy is taken instead, for every host, loopback too.
    let explicit = Client::builder()
        .timeout(Duration::from_secs(5))
        .proxy(Some(
            fcm_http::Proxy::parse(&format!("http://{proxy}")).unwrap(),
        ))
        .proxy_env(fcm_http::ProxyEnv::from_vars(env))
        .build()
        .unwrap();
    let err = explicit
        .send(post("https://127.0.0.1:4443/".into(), b""))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("403"), "{err:?}");
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[1].starts_with("CONNECT 127.0.0.1:4443 "), "{heads:?}");
    assert!(!heads[1].contains("Proxy-Authorization"), "{heads:?}");
}
