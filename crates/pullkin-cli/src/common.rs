//! What several commands share: where Google (or the emulator) is, the TLS roots, the
//! credentials files, printing a line.

use clap::Args;
use fcm_http::Endpoints;
use pullkin::{AppCredentials, PullkinCore};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{CliError, Context, Result};

/// Where the HTTP endpoints are and which roots to trust.
#[derive(Debug, Clone, Args)]
pub(crate) struct NetArgs {
    /// Base URL of an FCM emulator (`pullkin emulator` prints it): every Google HTTP
    /// endpoint is taken under it with Google's paths. Default: Google.
    #[arg(long, env = "PULLKIN_ENDPOINTS", value_name = "URL")]
    pub(crate) endpoints: Option<String>,
    /// A PEM file of CA certificates to trust instead of the built-in Mozilla roots
    /// (e.g. the emulator's CA, `pullkin emulator --ca-out`).
    #[arg(long, env = "PULLKIN_CA", value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,
    /// An HTTP proxy to reach Google (or the emulator) through, `http://[user:pass@]host:port`:
    /// every HTTPS request and the MCS connection go through `CONNECT` tunnels, TLS end
    /// to end. `none` connects directly. Default: the standard variables HTTPS_PROXY,
    /// HTTP_PROXY, ALL_PROXY and NO_PROXY (upper or lower case), per host; loopback
    /// hosts are always reached directly then.
    #[arg(
        long,
        env = "PULLKIN_PROXY",
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) proxy: Option<String>,
}

impl NetArgs {
    /// The endpoints: under `--endpoints`, or Google's.
    pub(crate) fn endpoints(&self) -> Result<Endpoints> {
        match &self.endpoints {
            Some(base) => Endpoints::at(base).context("--endpoints"),
            None => Ok(Endpoints::google()),
        }
    }

    /// The CA bundle named by `--ca`, read.
    pub(crate) fn ca_pem(&self) -> Result<Option<Vec<u8>>> {
        self.ca
            .as_ref()
            .map(|path| {
                fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))
            })
            .transpose()
    }

    /// The proxy named by `--proxy`, read: `None` leaves the choice to the proxy
    /// environment variables, `none` turns them off.
    pub(crate) fn proxy(&self) -> Result<Option<fcm_http::Proxy>> {
        self.proxy.as_deref().map(parse_proxy).transpose()
    }

    /// A registration core for these endpoints, roots and proxy.
    pub(crate) fn core(&self, retries: Option<u32>) -> Result<PullkinCore> {
        let mut builder = PullkinCore::builder()
            .endpoints(self.endpoints()?)
            .proxy(self.proxy()?);
        if let Some(pem) = self.ca_pem()? {
            builder = builder.webpki_roots(false).add_root_certificates_pem(&pem);
        }
        if let Some(attempts) = retries {
            builder =
                builder.retry(fcm_http::RetryPolicy::default().with_max_attempts(attempts.max(1)));
        }
        builder.build().with_context(|| match &self.ca {
            Some(path) => format!("setting up TLS with the CA file {}", path.display()),
            None => "setting up the HTTP client".to_owned(),
        })
    }

    /// An HTTP client trusting these roots, through the proxy if any.
    pub(crate) fn http_client(&self) -> Result<fcm_http::Client> {
        let mut builder = fcm_http::Client::builder().proxy(self.proxy()?);
        if let Some(pem) = self.ca_pem()? {
            builder = builder
                .webpki_roots(false)
                .add_root_certificates_pem(&pem)
                .with_context(|| {
                    format!(
                        "reading the CA file {}",
                        self.ca.as_deref().unwrap_or(Path::new("")).display()
                    )
                })?;
        }
        builder.build().context("setting up the HTTP client")
    }
}

/// A `--proxy` value: `none`, or an `http://` proxy URL.
fn parse_proxy(value: &str) -> Result<fcm_http::Proxy> {
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(fcm_http::Proxy::none());
    }
    fcm_http::Proxy::parse(value).context("--proxy")
}

/// Reads a credentials file: this tool's format, or the Python `pullkin` /
/// `firebase-messaging` ones.
pub(crate) fn read_credentials(path: &Path) -> Result<AppCredentials> {
    read_credentials_and_format(path).map(|(credentials, _)| credentials)
}

/// Reads a credentials file; the flag says whether it is in this tool's own format (and
/// so may be rewritten in place without changing its shape).
pub(crate) fn read_credentials_and_format(path: &Path) -> Result<(AppCredentials, bool)> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading the credentials file {}", path.display()))?;
    let credentials = AppCredentials::from_json(&text)
        .with_context(|| format!("reading the credentials file {}", path.display()))?;
    let native = serde_json::from_str::<AppCredentials>(&text).is_ok();
    Ok((credentials, native))
}

/// Writes credentials to `path` atomically (a temporary file beside it, flushed, then
/// renamed) with mode 0600. Refuses to replace an existing file unless `force`.
pub(crate) fn write_credentials(
    path: &Path,
    credentials: &AppCredentials,
    force: bool,
) -> Result<()> {
    if !force && path.exists() {
        return Err(CliError::msg(format!(
            "{} exists already (pass --force to replace it)",
            path.display()
        )));
    }
    let json = credentials
        .to_json()
        .context("serializing the credentials")?;
    pullkin::write_private_file(path, format!("{json}\n").as_bytes())
        .with_context(|| format!("writing the credentials file {}", path.display()))
}

/// The first characters of a long token, for human-readable output.
pub(crate) fn short(token: &str) -> String {
    const SHOWN: usize = 24;
    match token.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &token[..end]),
        None => token.to_owned(),
    }
}

/// Parses a `key=value` argument.
pub(crate) fn parse_key_value(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Writes one line to stdout and flushes it, so that a pipe sees it at once.
pub(crate) fn print_line(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert_eq!(parse_key_value("a="), Ok(("a".to_owned(), String::new())));
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("ab").is_err());
    }

    #[test]
    fn proxy_values() {
        assert!(parse_proxy("none").unwrap().is_none());
        assert!(parse_proxy("NONE").unwrap().is_none());
        let proxy = parse_proxy("http://proxy.example:3128").unwrap();
        assert_eq!(proxy.addr(), Some("proxy.example:3128"));
        let error = parse_proxy("socks5://u:hunter2@proxy.example").unwrap_err();
        let message = format!("{error} {:?}", std::error::Error::source(&error));
        assert!(message.contains("--proxy"), "{message}");
        assert!(message.contains("only http://"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn short_tokens() {
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(&"x".repeat(30)), format!("{}…", "x".repeat(24)));
    }
}
