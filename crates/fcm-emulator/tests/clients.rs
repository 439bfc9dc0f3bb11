#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The workspace's own client crates (`gcm-checkin`, `fcm-install` over `fcm-http`)
//! registering against the emulator, then receiving over MCS: the shapes they send and
//! parse match what the emulator serves.

use crate::common;

use common::{McsClient, app_data, decrypt, decrypted_json, http_client, http_client_via};
use fcm_emulator::{ConnectProxy, DeviceCredentials, Emulator, Persona, SendMessage};
use fcm_http::{Endpoints, RetryPolicy};
use fcm_install::{FirebaseApp, WebPushSubscription};
use gcm_checkin::{
    AndroidRegistration, CheckinCredentials, CheckinRequest, InstallationAuth, RegisterRequest,
    WebRegistration,
};
use webpush_ece::{Payload, ReceiverKeys};

/// An emulator, the endpoints pointing at it, and a policy that does not retry.
async fn start() -> (Emulator, Endpoints, RetryPolicy) {
    let emu = Emulator::start().await.unwrap();
    let endpoints = Endpoints::at(emu.base_url().as_str()).unwrap();
    (emu, endpoints, RetryPolicy::no_retry())
}

/// What an MCS login needs from check-in's credentials.
fn device_credentials(credentials: CheckinCredentials) -> DeviceCredentials {
    DeviceCredentials {
        android_id: credentials.android_id,
        security_token: credentials.security_token.expose(),
    }
}

#[tokio::test]
async fn web_persona_with_the_client_crates() {
    let (emu, endpoints, retry) = start().await;
    let client = http_client(&emu);

    let checkin = gcm_checkin::check_in(&client, &endpoints, &CheckinRequest::new_device(), &retry)
        .await
        .unwrap();
    let credentials = checkin.credentials;
    // A re-check-in keeps the identity.
    let again = gcm_checkin::check_in(
        &client,
        &endpoints,
        &CheckinRequest::recheck(credentials),
        &retry,
    )
    .await
    .unwrap();
    assert_eq!(again.credentials, credentials);

    let gcm_token = gcm_checkin::register(
        &client,
        &endpoints,
        &RegisterRequest::web(credentials, WebRegistration::new()),
        &retry,
    )
    .await
    .unwrap();
    let gcm = emu.gcm_registration(gcm_token.as_str()).unwrap();
    assert_eq!(gcm.persona, Persona::Web);

    let app = FirebaseApp::web("demo-project", "AIzaKey", "1:1234:web:abcd");
    let fid = fcm_install::generate_fid();
    let installation = fcm_install::create_installation(&client, &endpoints, &app, &fid, &retry)
        .await
        .unwrap();
    assert_eq!(installation.fid, fid);
    let refreshed = fcm_install::refresh_auth_token(
        &client,
        &endpoints,
        &app,
        &installation.fid,
        &installation.refresh_token,
        &retry,
    )
    .await
    .unwrap();

    let keys = ReceiverKeys::generate();
    let subscription = WebPushSubscription::new(
        fcm_install::fcm_send_endpoint(&endpoints, gcm_token.as_str()).unwrap(),
        keys.public_key_base64(),
        keys.auth_secret_base64().as_str(),
    );
    let registration = fcm_install::create_registration(
        &client,
        &endpoints,
        &app,
        refreshed.token(),
        &subscription,
        &retry,
    )
    .await
    .unwrap();

    let mut mcs = McsClient::logged_in(&emu, device_credentials(credentials)).await;
    let sent = emu
        .send(
            registration.token.as_str(),
            &SendMessage::new().data("hello", "world"),
        )
        .unwrap();
    assert!(sent.encrypted);
    let message = decrypted_json(&keys, &mcs.expect_data().await);
    assert_eq!(message["data"]["hello"], "world");

    let delete = fcm_install::delete_registration_request(
        &endpoints,
        &app,
        refreshed.token(),
        &registration.name,
    )
    .unwrap();
    let response = fcm_http::HttpClient::send(&client, delete).await.unwrap();
    fcm_install::parse_delete_registration_response(&response).unwrap();
    assert!(emu.fcm_registration(registration.token.as_str()).is_none());
}

#[tokio::test]
async fn android_persona_with_the_client_crates() {
    let (emu, endpoints, retry) = start().await;
    let client = http_client(&emu);

    let credentials =
        gcm_checkin::check_in(&client, &endpoints, &CheckinRequest::new_device(), &retry)
            .await
            .unwrap()
            .credentials;
    let app = FirebaseApp::android(
        "demo-project",
        "AIzaKey",
        "1:1234:android:abcd",
        "com.example.app",
        gcm_checkin::DEFAULT_ANDROID_CERT,
    );
    let fid = fcm_install::generate_fid();
    let installation = fcm_install::create_installation(&client, &endpoints, &app, &fid, &retry)
        .await
        .unwrap();
    let registration = AndroidRegistration::new("1234", "com.example.app")
        .with_gmp_app_id("1:1234:android:abcd")
        .with_installation(InstallationAuth::new(
            installation.fid.clone(),
            installation.auth_token.token(),
        ));
    let gcm_token = gcm_checkin::register(
        &client,
        &endpoints,
        &RegisterRequest::android(credentials, registration),
        &retry,
    )
    .await
    .unwrap();
    assert_eq!(
        emu.gcm_registration(gcm_token.as_str()).unwrap().persona,
        Persona::Android
    );

    // A transient register3 failure is retried by the client.
    emu.fail_register3(1, "PHONE_REGISTRATION_ERROR");
    let retrying = RetryPolicy::default()
        .with_initial_delay(std::time::Duration::from_millis(1))
        .with_max_attempts(3);
    gcm_checkin::register(
        &client,
        &endpoints,
        &RegisterRequest::web(credentials, WebRegistration::new()),
        &retrying,
    )
    .await
    .unwrap();

    let mut mcs = McsClient::logged_in(&emu, device_credentials(credentials)).await;
    emu.send(gcm_token.as_str(), &SendMessage::new().data("plain", "yes"))
        .unwrap();
    let stanza = mcs.expect_data().await;
    assert_eq!(app_data(&stanza, "plain"), Some("yes"));
    assert_eq!(stanza.category, "com.example.app");
    assert_eq!(
        decrypt(&ReceiverKeys::generate(), &stanza),
        Payload::NotEncrypted
    );
}

/// The client crates through an HTTP proxy, as on a network that reaches Google only that
/// way: every request goes through a `CONNECT` tunnel, TLS end to end.
#[tokio::test]
async fn check_in_through_a_connect_proxy_with_and_without_its_password() {
    let (emu, endpoints, retry) = start().await;
    let check_in_via = |proxy: String| {
        let (emu, endpoints, retry) = (&emu, &endpoints, &retry);
        async move {
            let client = http_client_via(emu, Some(&proxy));
            gcm_checkin::check_in(&client, endpoints, &CheckinRequest::new_device(), retry).await
        }
    };
    let target = format!(
        "{}:{}",
        emu.base_url().host_str().unwrap(),
        emu.base_url().port().unwrap()
    );

    let open = ConnectProxy::start().await.unwrap();
    let checkin = check_in_via(open.url()).await.unwrap();
    assert!(emu.device(checkin.credentials.android_id).is_some());
    assert_eq!(open.tunnels(), std::slice::from_ref(&target));

    // A proxy that wants a password: refused without it, served with it.
    let guarded = ConnectProxy::start_with_authorization(Some("Basic dXNlcjpwQHNz".into()))
        .await
        .unwrap();
    let anonymous = guarded.url();
    let err = check_in_via(anonymous.clone()).await.unwrap_err();
    let message = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(message.contains("407"), "{message}");
    assert_eq!(guarded.refused(), 1);
    // user:p@ss, the @ percent-encoded in the URL.
    let with_password = anonymous.replace("http://", "http://user:p%40ss@");
    check_in_via(with_password).await.unwrap();
    assert_eq!(guarded.tunnels(), [target]);
}
