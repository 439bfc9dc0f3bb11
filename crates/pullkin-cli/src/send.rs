//! `pullkin send`: a test message through the FCM HTTP v1 send API, or an `aes128gcm`
//! Web Push message to a push endpoint.

use std::collections::BTreeMap;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use fcm_http::http::{Method, Request, Response, header};
use fcm_http::{HttpClient, url::Url};
use serde_json::{Map, Value, json};
use webpush_ece::{EncryptOptions, SubscriptionKeys, aes128gcm};

use crate::common::{NetArgs, parse_key_value, print_line};
use crate::error::{CliError, Context, Kind, Result};

pub(crate) const EXAMPLES: &str = "Examples:
  # Through the emulator's send API, to an FCM token (web devices get it aesgcm-encrypted)
  # or to an Android device's GCM token (plain data):
  pullkin send --endpoints https://127.0.0.1:4443 --ca ca.pem --token <TOKEN> \\
      --data order=42 --title Hello --body 'from pullkin'
  # Web Push (RFC 8291 aes128gcm) to a subscription's endpoint and keys
  # (`pullkin credentials show web.json --endpoints …` prints them):
  pullkin send --ca ca.pem --webpush https://127.0.0.1:4443/fcm/send/<GCM TOKEN> \\
      --p256dh <KEY> --auth <SECRET> --data order=42
  # Through Google's FCM v1 API (an OAuth 2 access token of the project is needed):
  pullkin send --project my-project --access-token \"$(gcloud auth print-access-token)\" \\
      --token <TOKEN> --data order=42

Stdout gets the message name (send API) or its Location (Web Push).
Web Push is signed with VAPID (RFC 8292) by a key made for each message: push services
take that for subscriptions made without an application server key (--vapid-key); one
made with a key takes only pushes signed by that key.";

/// Default Web Push time to live: one day.
const DEFAULT_TTL: u64 = 86_400;

/// Arguments of `pullkin send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The FCM or GCM token to send to through the send API.
    #[arg(
        long,
        value_name = "TOKEN",
        required_unless_present = "webpush",
        conflicts_with = "webpush",
        allow_hyphen_values = true
    )]
    token: Option<String>,
    /// Send a Web Push message (aes128gcm) to this push endpoint instead.
    #[arg(long, value_name = "URL", requires_all = ["p256dh", "auth"])]
    webpush: Option<String>,
    /// The subscription's public key (base64url), for --webpush.
    #[arg(
        long,
        value_name = "KEY",
        requires = "webpush",
        allow_hyphen_values = true
    )]
    p256dh: Option<String>,
    /// The subscription's auth secret (base64url), for --webpush.
    /// (base64url text may begin with `-`: it is taken as the value.)
    #[arg(
        long,
        value_name = "SECRET",
        requires = "webpush",
        allow_hyphen_values = true
    )]
    auth: Option<String>,
    /// A data entry (repeatable).
    #[arg(long = "data", short = 'd', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    data: Vec<(String, String)>,
    /// The notification title.
    #[arg(long)]
    title: Option<String>,
    /// The notification body.
    #[arg(long)]
    body: Option<String>,
    /// For --webpush: send this text as it is, instead of the JSON built from --data,
    /// --title and --body.
    #[arg(long, value_name = "TEXT", requires = "webpush", conflicts_with_all = ["data", "title", "body"], allow_hyphen_values = true)]
    payload: Option<String>,
    /// The message priority.
    #[arg(long, value_parser = ["normal", "high"])]
    priority: Option<String>,
    /// The Firebase project of the send API (the emulator takes any).
    #[arg(
        long,
        value_name = "ID",
        default_value = "pullkin",
        conflicts_with = "webpush"
    )]
    project: String,
    /// The OAuth 2 access token for the send API (the emulator takes any; Google needs a
    /// real one).
    #[arg(
        long,
        env = "PULLKIN_ACCESS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    access_token: Option<String>,
    /// For --webpush: how long the push service keeps the message, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TTL)]
    ttl: u64,
    #[command(flatten)]
    net: NetArgs,
}

/// What a message carries, whichever way it is sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Content {
    /// Data entries.
    pub(crate) data: BTreeMap<String, String>,
    /// Notification title.
    pub(crate) title: Option<String>,
    /// Notification body.
    pub(crate) body: Option<String>,
    /// `normal` or `high`.
    pub(crate) priority: Option<String>,
}

impl Content {
    fn notification(&self) -> Option<Value> {
        if self.title.is_none() && self.body.is_none() {
            return None;
        }
        let mut object = Map::new();
        if let Some(title) = &self.title {
            object.insert("title".into(), Value::String(title.clone()));
        }
        if let Some(body) = &self.body {
            object.insert("body".into(), Value::String(body.clone()));
        }
        Some(Value::Object(object))
    }

    /// The FCM HTTP v1 `message` for a token.
    fn v1_message(&self, token: &str) -> Value {
        let mut message = json!({ "token": token, "data": self.data });
        if let Some(notification) = self.notification() {
            message["notification"] = notification;
        }
        if let Some(priority) = &self.priority {
            message["android"] = json!({ "priority": priority });
            message["webpush"] = json!({ "headers": { "Urgency": priority } });
        }
        json!({ "message": message })
    }

    /// The JSON a Web Push message carries (the shape FCM's own payloads have).
    pub(crate) fn webpush_json(&self) -> Value {
        let mut payload = json!({ "data": self.data });
        if let Some(notification) = self.notification() {
            payload["notification"] = notification;
        }
        if let Some(priority) = &self.priority {
            payload["priority"] = Value::String(priority.clone());
        }
        payload
    }
}

/// Sends `request` (to `url`); an answer other than 2xx is an error that names the peer
/// (`"<peer> <url> answered <status>: <body excerpt>"`).
async fn post(
    client: &dyn HttpClient,
    request: Request<Bytes>,
    url: &Url,
    peer: &str,
) -> Result<Response<Bytes>> {
    let response = client
        .send(request)
        .await
        .with_context(|| format!("posting to {url}"))?;
    if !response.status().is_success() {
        return Err(CliError::msg(format!(
            "{peer} {url} answered {}: {}",
            response.status(),
            fcm_http::excerpt(response.body())
        )));
    }
    Ok(response)
}

/// Posts a message to the send API under `base` (`<base>/v1/projects/<p>/messages:send`);
/// returns the message name.
pub(crate) async fn send_api(
    client: &dyn HttpClient,
    base: &Url,
    project: &str,
    access_token: &str,
    token: &str,
    content: &Content,
) -> Result<String> {
    let url = fcm_http::join(base, &["v1", "projects", project, "messages:send"])
        .context("building the send API URL")?;
    let body = serde_json::to_vec(&content.v1_message(token)).context("encoding the message")?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(fcm_http::to_uri(&url).context("building the send API URL")?)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
        .body(Bytes::from(body))
        .context("building the send request")?;
    let response = post(client, request, &url, "the send API at").await?;
    let answer: Value =
        serde_json::from_slice(response.body()).context("reading the send API's answer")?;
    Ok(answer
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("sent")
        .to_owned())
}

/// Encrypts `plaintext` for a subscription (RFC 8291, aes128gcm), signs the request with
/// a fresh VAPID key (RFC 8292: `aud` the endpoint's origin, `exp` 12 h ahead) and posts
/// it to its push endpoint; returns the message's location, or `sent`.
pub(crate) async fn webpush(
    client: &dyn HttpClient,
    endpoint: &str,
    keys: &SubscriptionKeys,
    plaintext: &[u8],
    ttl: u64,
    urgency: Option<&str>,
) -> Result<String> {
    let url = Url::parse(endpoint).with_context(|| format!("the push endpoint {endpoint:?}"))?;
    let body = aes128gcm::encrypt(keys, plaintext, &EncryptOptions::new())
        .context("encrypting the message")?;
    let authorization = fcm_emulator::VapidKey::generate()
        .and_then(|key| key.authorization(url.as_str()))
        .context("signing the push (VAPID)")?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(fcm_http::to_uri(&url).context("the push endpoint")?)
        .header(header::AUTHORIZATION, authorization)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_ENCODING, "aes128gcm")
        .header("TTL", ttl.to_string());
    if let Some(urgency) = urgency {
        request = request.header("Urgency", urgency);
    }
    let request = request
        .body(Bytes::from(body))
        .context("building the push request")?;
    let response = post(client, request, &url, "the push endpoint").await?;
    Ok(response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("sent")
        .to_owned())
}

/// Runs `pullkin send`.
pub(crate) async fn run(args: SendArgs) -> Result<ExitCode> {
    let client = args.net.http_client().config_error()?;
    let content = Content {
        data: args.data.iter().cloned().collect(),
        title: args.title.clone(),
        body: args.body.clone(),
        priority: args.priority.clone(),
    };
    let answer = match (&args.webpush, &args.token) {
        (Some(endpoint), _) => {
            let (Some(p256dh), Some(auth)) = (&args.p256dh, &args.auth) else {
                return Err(CliError::usage("--webpush needs --p256dh and --auth"));
            };
            let keys = SubscriptionKeys::from_base64(p256dh, auth)
                .context("the subscription keys (--p256dh, --auth)")
                .config_error()?;
            let plaintext = match &args.payload {
                Some(text) => text.clone().into_bytes(),
                None => content.webpush_json().to_string().into_bytes(),
            };
            webpush(
                &client,
                endpoint,
                &keys,
                &plaintext,
                args.ttl,
                args.priority.as_deref(),
            )
            .await?
        }
        (None, Some(token)) => {
            let (base, access_token) = match (&args.net.endpoints, &args.access_token) {
                (Some(base), token) => (
                    Url::parse(base).context("--endpoints").config_error()?,
                    token.clone().unwrap_or_else(|| "emulator".to_owned()),
                ),
                (None, Some(token)) => (
                    Url::parse("https://fcm.googleapis.com").context("the FCM URL")?,
                    token.clone(),
                ),
                (None, None) => {
                    return Err(CliError::usage(
                        "sending through Google needs --access-token (an OAuth 2 token of the \
                         project); for the emulator, pass --endpoints",
                    ));
                }
            };
            send_api(
                &client,
                &base,
                &args.project,
                &access_token,
                token,
                &content,
            )
            .await?
        }
        (None, None) => return Err(CliError::usage("pass --token or --webpush")),
    };
    print_line(&answer)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_message_shape() {
        let content = Content {
            data: [("k".to_owned(), "v".to_owned())].into(),
            title: Some("T".into()),
            body: None,
            priority: Some("high".into()),
        };
        let message = content.v1_message("tok");
        assert_eq!(message["message"]["token"], "tok");
        assert_eq!(message["message"]["data"]["k"], "v");
        assert_eq!(message["message"]["notification"], json!({ "title": "T" }));
        assert_eq!(message["message"]["android"]["priority"], "high");
        let plain = Content::default().webpush_json();
        assert_eq!(plain, json!({ "data": {} }));
    }
}
