//! `pullkin demo`: the whole pipeline against an in-process emulator, with each step
//! shown. It exits 0 only when every message arrived intact.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use fcm_emulator::Emulator;
use fcm_http::{Endpoints, RetryPolicy};
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use pullkin::{
    AppCredentials, ConnectionState, Event, ListenerConfig, Message, Pullkin, PullkinCore,
    RegisterParams,
};
use tokio::time::Instant;
use webpush_ece::{ContentEncoding, SubscriptionKeys};

use crate::common::short;
use crate::error::{CliError, Context, Result};
use crate::send::{self, Content};

/// The Firebase project the demo devices register with (the emulator takes any).
const PROJECT: &str = "pullkin-demo";
const SENDER_ID: &str = "123456789012";
const API_KEY: &str = "AIzaSy-pullkin-demo-key";

/// Arguments of `pullkin demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Give up (exit 1) when the whole demo takes longer than this.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    timeout: u64,
}

/// One of the messages the demo sends, and what must arrive.
struct Expected {
    kind: &'static str,
    app: &'static str,
    encoding: Option<ContentEncoding>,
    content: Content,
    arrived: bool,
}

impl Expected {
    fn new(kind: &'static str, app: &'static str, encoding: Option<ContentEncoding>) -> Self {
        let data: BTreeMap<String, String> = [
            ("demo".to_owned(), kind.to_owned()),
            ("text".to_owned(), format!("grüße from pullkin ✓ ({kind})")),
        ]
        .into();
        Self {
            kind,
            app,
            encoding,
            content: Content {
                data,
                title: Some(format!("pullkin demo: {kind}")),
                body: Some("it works".to_owned()),
                priority: None,
            },
            arrived: false,
        }
    }

    /// Whether `message` is this one, intact.
    fn matches(&self, app: &str, message: &Message) -> bool {
        app == self.app
            && message.encoding == self.encoding
            && self
                .content
                .data
                .iter()
                .all(|(k, v)| message.data.get(k) == Some(v))
            && message.persistent_id.is_some()
    }
}

fn step(n: u32, text: &str) {
    println!("[{n}/6] {text}");
}

fn detail(text: &str) {
    println!("      {text}");
}

/// Awaits `future` unless the deadline passes first.
async fn within<T>(deadline: Instant, what: &str, future: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout_at(deadline, future)
        .await
        .map_err(|_| CliError::msg(format!("timed out {what}")))
}

/// Runs `pullkin demo`.
pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    println!("pullkin demo: register, listen and receive against a local FCM emulator");
    println!("(no Google account, no network: everything below runs on 127.0.0.1)\n");

    step(
        1,
        "starting the FCM emulator (Google's HTTP APIs and MCS server, over TLS)",
    );
    let emulator = within(deadline, "starting the emulator", Emulator::start())
        .await?
        .context("starting the emulator")?;
    let base = emulator.base_url().clone();
    detail(&format!(
        "HTTP APIs at {}, MCS at {}",
        base.as_str().trim_end_matches('/'),
        emulator.mcs_addr()
    ));
    let core = PullkinCore::builder()
        .endpoints(Endpoints::at(base.as_str()).context("the emulator's base URL")?)
        .webpki_roots(false)
        .add_root_certificates_pem(emulator.ca_cert_pem().as_bytes())
        .retry(
            RetryPolicy::default()
                .with_max_attempts(2)
                .with_initial_delay(Duration::from_millis(100)),
        )
        .build()
        .context("setting up the registration client")?;

    step(
        2,
        "registering an Android-persona device (check-in, Firebase installation, register3, \
         FCM)",
    );
    let android_params = RegisterParams::android(
        SENDER_ID,
        "1:123456789012:android:0a1b2c3d4e5f",
        API_KEY,
        PROJECT,
    )
    .app_name("com.example.pullkin_demo");
    let android = register(&core, &android_params, deadline, "Android").await?;

    step(3, "registering a web-persona (Chrome) device");
    let web_params = RegisterParams::web(
        SENDER_ID,
        "1:123456789012:web:0a1b2c3d4e5f",
        API_KEY,
        PROJECT,
    );
    let web = register(&core, &web_params, deadline, "web").await?;
    let web_fcm_token = web
        .fcm
        .token()
        .context("the web device got no FCM token")?
        .to_owned();

    step(4, "listening: one MCS connection per device, over TLS");
    let mut config = ListenerConfig::default();
    config.mcs_endpoints = vec![emulator.mcs_addr().to_string()];
    let pullkin = Pullkin::builder()
        .config(config)
        .tls(core.tls_config())
        .build()
        .context("setting up the listener")?;
    let mut events = pullkin.events();
    let mut messages = SelectAll::new();
    for (app, credentials) in [("android", &android), ("web", &web)] {
        pullkin
            .add_app(app, credentials, Vec::new())
            .with_context(|| format!("starting the {app} listener"))?;
        messages.push(
            pullkin
                .listen(app)
                .with_context(|| format!("listening for {app}"))?
                .boxed(),
        );
    }
    let mut connected = Vec::new();
    while connected.len() < 2 {
        let event = within(deadline, "waiting for the MCS logins", events.recv()).await?;
        match event {
            Ok(Event::State {
                app,
                state: ConnectionState::Connected { .. },
            }) => {
                detail(&format!("[{app}] connected"));
                connected.push(app);
            }
            Ok(Event::State {
                app,
                state: ConnectionState::BackingOff { error, .. },
            }) => {
                return Err(CliError::msg(format!("[{app}] could not connect: {error}")));
            }
            _ => {}
        }
    }

    step(5, "sending three messages");
    let http = core.http_client();
    let mut expected = [
        Expected::new("plain", "android", None),
        Expected::new("aesgcm", "web", Some(ContentEncoding::AesGcm)),
        Expected::new("aes128gcm", "web", Some(ContentEncoding::Aes128Gcm)),
    ];
    let name = within(
        deadline,
        "sending the plain message",
        send::send_api(
            &*http,
            &base,
            PROJECT,
            "demo-access-token",
            android.gcm.token.as_str(),
            &expected[0].content,
        ),
    )
    .await??;
    detail(&format!(
        "plain → the Android device's GCM token, through the send API: {name}"
    ));
    let name = within(
        deadline,
        "sending the aesgcm message",
        send::send_api(
            &*http,
            &base,
            PROJECT,
            "demo-access-token",
            &web_fcm_token,
            &expected[1].content,
        ),
    )
    .await??;
    detail(&format!(
        "aesgcm → the web device's FCM token, through the send API (FCM encrypts): {name}"
    ));
    let keys = SubscriptionKeys::from_base64(&web.keys.public, web.keys.secret.expose())
        .context("the web device's subscription keys")?;
    let endpoint = emulator.webpush_endpoint(web.gcm.token.as_str());
    let plaintext = expected[2].content.webpush_json().to_string();
    let location = within(
        deadline,
        "sending the aes128gcm message",
        send::webpush(
            &*http,
            endpoint.as_str(),
            &keys,
            plaintext.as_bytes(),
            60,
            None,
        ),
    )
    .await??;
    detail(&format!(
        "aes128gcm → the web device's push endpoint, encrypted here (RFC 8291): {location}"
    ));

    step(6, "receiving");
    while let Some(missing) = expected.iter().find(|e| !e.arrived).map(|e| e.kind) {
        let incoming = within(
            deadline,
            &format!("waiting for the {missing} message"),
            messages.next(),
        )
        .await?
        .context("the listener stopped")?;
        detail(&describe(&incoming.app, &incoming.message));
        let Some(found) = expected
            .iter_mut()
            .find(|e| !e.arrived && e.matches(&incoming.app, &incoming.message))
        else {
            return Err(CliError::msg(format!(
                "[{}] a message arrived that was not sent, or not intact: {:?}",
                incoming.app, incoming.message.data
            )));
        };
        found.arrived = true;
        detail(&format!("  the {} message arrived intact", found.kind));
    }
    pullkin.shutdown().await;
    emulator.shutdown().await;
    println!(
        "\nall 3 messages arrived intact (plain, aesgcm, aes128gcm) in {} ms",
        started.elapsed().as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

async fn register(
    core: &PullkinCore,
    params: &RegisterParams,
    deadline: Instant,
    persona: &str,
) -> Result<AppCredentials> {
    let credentials = within(
        deadline,
        &format!("registering the {persona} device"),
        core.register(params),
    )
    .await?
    .with_context(|| format!("registering the {persona} device"))?;
    detail(&format!(
        "android_id {}, GCM token {}",
        credentials.gcm.android_id,
        short(credentials.gcm.token.as_str())
    ));
    match credentials.fcm.token() {
        Some(token) => detail(&format!("FCM token {}", short(token))),
        None => {
            return Err(CliError::msg(format!(
                "the {persona} device's FCM registration failed: {}",
                credentials.fcm.error.as_deref().unwrap_or("no token")
            )));
        }
    }
    Ok(credentials)
}

/// One line about a received message: app, encoding, id, the sender's data (without
/// the keys FCM adds) and the notification title.
fn describe(app: &str, message: &Message) -> String {
    let data: BTreeMap<&str, &str> = message
        .data
        .iter()
        .filter(|(k, _)| !k.starts_with("google.") && !k.starts_with("gcm."))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    format!(
        "← [{app}] {} message {}: data {}, title {:?}",
        message.encoding.map_or("plain", ContentEncoding::as_str),
        message.persistent_id.as_deref().unwrap_or("(no id)"),
        serde_json::to_string(&data).unwrap_or_default(),
        message
            .notification
            .as_ref()
            .and_then(|n| n.title.as_deref())
            .unwrap_or_default()
    )
}
