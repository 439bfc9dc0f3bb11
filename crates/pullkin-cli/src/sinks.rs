//! `--sink` and `--park` of `pullkin listen` and `pullkin fleet tail`: where messages go.
//! Stdout is the default; a sink (NATS JetStream, a webhook, a file) takes them durably
//! before they are acknowledged to FCM (`pullkin::Pullkin::forward`) or before the
//! fleet consumer's cursor is committed (`pullkin::deliver_batch`). Both commands open
//! their sinks with [`Opener`], from the same URLs and [`SinkOptions`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use pullkin::Sink;
use pullkin_sink::{FileSink, NatsConfig, NatsSink, WebhookConfig, WebhookSink};

use crate::error::{CliError, Context, Kind, Result};

/// Where messages go.
#[derive(Debug, Clone, Args)]
pub(crate) struct SinkArgs {
    /// Where messages go instead of stdout: `nats://HOST:PORT/SUBJECT` (`{app}` in the
    /// subject is the app's name; default subject `pullkin.{app}`), `https://…` (a
    /// webhook), `file:PATH` (JSON lines, synced), or `-` (stdout). `APP=URL` sets one
    /// app's destination; repeat the flag for several.
    #[arg(long = "sink", env = "PULLKIN_SINK", value_name = "[APP=]URL")]
    sinks: Vec<String>,
    /// Where messages a sink rejects for good are parked: a URL as for --sink (default:
    /// `file:<state dir>/rejected.jsonl`).
    #[arg(long, env = "PULLKIN_PARK", value_name = "URL")]
    park: Option<String>,
    #[command(flatten)]
    options: SinkOptions,
}

/// What every sink of a command shares.
#[derive(Debug, Clone, Args)]
pub(crate) struct SinkOptions {
    /// Create this JetStream stream on first use when it is missing (its subjects: those
    /// of the NATS sinks).
    #[arg(long, value_name = "NAME")]
    create_stream: Option<String>,
    /// Sign webhook bodies with HMAC-SHA256 and the secret in this file (the header
    /// `X-Pullkin-Signature: sha256=<hex>`).
    #[arg(long, env = "PULLKIN_SINK_SECRET_FILE", value_name = "FILE")]
    sink_secret_file: Option<PathBuf>,
}

impl SinkOptions {
    /// Reads the webhook secret (a configuration error when it cannot be read).
    pub(crate) fn opener<'a>(&'a self, ca_pem: Option<&'a [u8]>) -> Result<Opener<'a>> {
        let secret = self
            .sink_secret_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|s| s.trim_end().to_owned())
                    .with_context(|| format!("reading the sink secret {}", path.display()))
            })
            .transpose()
            .config_error()?;
        Ok(Opener {
            create_stream: self.create_stream.as_deref(),
            secret,
            ca_pem,
        })
    }
}

/// Opens sinks from their URLs, with a command's [`SinkOptions`].
pub(crate) struct Opener<'a> {
    create_stream: Option<&'a str>,
    secret: Option<String>,
    ca_pem: Option<&'a [u8]>,
}

/// Which apps go where.
pub(crate) struct Routes {
    /// Apps whose messages are printed.
    pub stdout: Vec<String>,
    /// Each sink with the apps it takes.
    pub forwards: Vec<(Arc<dyn Sink>, Vec<String>)>,
    /// Where rejected messages are parked.
    pub park: Arc<dyn Sink>,
}

/// One `--sink` value: the app it is for (all when `None`) and the destination.
fn split_spec(spec: &str) -> (Option<&str>, &str) {
    // `APP=URL`, where APP has no ':' or '/' (a URL may hold '=' in its query).
    match spec.split_once('=') {
        Some((app, url)) if !app.is_empty() && !app.contains([':', '/']) => (Some(app), url),
        _ => (None, spec),
    }
}

impl SinkArgs {
    /// Opens the sinks (connecting to NATS servers) and routes each app to one.
    pub(crate) async fn open(
        &self,
        apps: &[String],
        ca_pem: Option<&[u8]>,
        state_dir: &Path,
    ) -> Result<Routes> {
        let mut default = "-".to_owned();
        let mut per_app: BTreeMap<&str, &str> = BTreeMap::new();
        for spec in &self.sinks {
            match split_spec(spec) {
                (Some(app), url) => {
                    if !apps.iter().any(|a| a == app) {
                        return Err(CliError::usage(format!(
                            "--sink {spec}: there is no app {app:?} (apps are named after their \
                             credentials files)"
                        )));
                    }
                    per_app.insert(app, url);
                }
                (None, url) => url.clone_into(&mut default),
            }
        }
        let opener = self.options.opener(ca_pem)?;
        let mut opened: BTreeMap<&str, Arc<dyn Sink>> = BTreeMap::new();
        let mut routes = Routes {
            stdout: Vec::new(),
            forwards: Vec::new(),
            park: Arc::new(FileSink::new(state_dir.join("rejected.jsonl"))),
        };
        let mut grouped: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for app in apps {
            let url = per_app.get(app.as_str()).copied().unwrap_or(&default);
            if is_stdout(url) {
                routes.stdout.push(app.clone());
            } else {
                grouped.entry(url).or_default().push(app.clone());
            }
        }
        for (url, apps) in grouped {
            let sink = match opened.get(url) {
                Some(sink) => Arc::clone(sink),
                None => {
                    let sink = opener.open(url).await?;
                    opened.insert(url, Arc::clone(&sink));
                    sink
                }
            };
            routes.forwards.push((sink, apps));
        }
        if let Some(park) = &self.park {
            routes.park = opener.open_park(park).await?;
        }
        Ok(routes)
    }
}

impl Opener<'_> {
    /// The park `--park URL` names: anything but stdout.
    pub(crate) async fn open_park(&self, url: &str) -> Result<Arc<dyn Sink>> {
        if is_stdout(url) {
            return Err(CliError::usage(
                "--park -: rejected messages must be kept somewhere durable (a file, NATS or \
                 a webhook)",
            ));
        }
        self.open(url).await
    }

    /// The sink a URL names (connecting to a NATS server now); not stdout.
    pub(crate) async fn open(&self, url: &str) -> Result<Arc<dyn Sink>> {
        if url.starts_with("nats://") || url.starts_with("tls://") {
            let mut config = NatsConfig::default();
            if let Some(stream) = self.create_stream {
                config = config.with_stream(stream.to_owned());
            }
            let sink = NatsSink::connect(url, config).await.map_err(sink_error)?;
            return Ok(Arc::new(sink));
        }
        if url.starts_with("https://") || url.starts_with("http://") {
            let mut config = WebhookConfig::default();
            if let Some(pem) = self.ca_pem {
                config.root_certificates_pem.push(pem.to_vec());
            }
            config.secret = self.secret.clone().map(fcm_http::Secret::new);
            let sink = WebhookSink::new(url, config).map_err(sink_error)?;
            return Ok(Arc::new(sink));
        }
        if let Some(path) = url.strip_prefix("file:") {
            return Ok(Arc::new(FileSink::new(path)));
        }
        Err(CliError::usage(format!(
            "--sink {url}: not a destination (nats://…, https://…, file:PATH or -)"
        )))
    }
}

pub(crate) fn is_stdout(url: &str) -> bool {
    url == "-" || url == "stdout"
}

/// A sink that cannot be set up: a bad URL is a configuration error (78), an
/// unreachable destination a failure (1).
fn sink_error(error: pullkin_sink::Error) -> CliError {
    let config = matches!(error, pullkin_sink::Error::Config { .. });
    let error = CliError::msg(error.to_string());
    if config {
        error.kind(crate::error::ErrorKind::Config)
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::split_spec;

    #[test]
    fn a_sink_names_its_app_or_all() {
        assert_eq!(
            split_spec("web=nats://h:1/x"),
            (Some("web"), "nats://h:1/x")
        );
        assert_eq!(split_spec("nats://h:1/x"), (None, "nats://h:1/x"));
        assert_eq!(
            split_spec("https://h/hook?a=b"),
            (None, "https://h/hook?a=b"),
            "a query's '=' names no app"
        );
        assert_eq!(split_spec("file:/tmp/x=y"), (None, "file:/tmp/x=y"));
        assert_eq!(split_spec("-"), (None, "-"));
    }
}
