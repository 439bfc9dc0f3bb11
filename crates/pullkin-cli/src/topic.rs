//! `pullkin topic subscribe|unsubscribe|list`: the topics of an Android-persona
//! registration (docs/protocol.md §7.1), kept in its credentials file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use pullkin::{AppCredentials, PullkinError, TopicError};

use crate::common::{self, NetArgs, print_line};
use crate::error::{CliError, Context, ErrorKind, Kind, Result};
use crate::log;

pub(crate) const EXAMPLES: &str = "Examples:
  # Subscribe an Android-persona registration to two topics, then list them:
  pullkin topic subscribe app.json news weather.eu
  pullkin topic list app.json
  # Unsubscribe (against the local emulator):
  pullkin topic unsubscribe app.json news --endpoints https://127.0.0.1:4443 --ca ca.pem
  # Messages sent to a topic arrive with from=/topics/<name>:
  pullkin listen app.json

Topic names are 1 to 900 of the letters, digits and - _ . ~ % (a /topics/ prefix is
dropped). The credentials file is rewritten in place (mode 0600) after each change; it
must be in pullkin's own format (`pullkin credentials import` converts others).
Web-persona (Chrome) registrations are subscribed on the sender's server (Firebase Admin
SDK), not here. When Google answers Error=RST the identity was reset: register again.";

/// `pullkin topic …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Subscribe the registration to topics (register3 with scope /topics/<name>); prints
    /// each topic subscribed.
    Subscribe(ChangeArgs),
    /// Unsubscribe the registration from topics (the same request with delete=1); prints
    /// each topic unsubscribed.
    Unsubscribe(ChangeArgs),
    /// Print the topics the credentials file records, one a line (no request).
    List(ListArgs),
}

/// Arguments of `pullkin topic subscribe` and `unsubscribe`.
#[derive(Debug, Args)]
pub(crate) struct ChangeArgs {
    /// The credentials file (pullkin's format, Android persona); rewritten in place.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The topics.
    #[arg(value_name = "TOPIC", required = true)]
    topics: Vec<String>,
    #[command(flatten)]
    net: NetArgs,
}

/// Arguments of `pullkin topic list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The credentials file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Runs `pullkin topic …`.
pub(crate) async fn run(command: TopicCommand) -> Result<ExitCode> {
    match command {
        TopicCommand::List(args) => {
            let credentials = common::read_credentials(&args.file).config_error()?;
            for topic in credentials.topics() {
                print_line(topic)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicCommand::Subscribe(args) => change(args, true).await,
        TopicCommand::Unsubscribe(args) => change(args, false).await,
    }
}

async fn change(args: ChangeArgs, subscribe: bool) -> Result<ExitCode> {
    let mut credentials = read_own(&args.file)?;
    let core = args.net.core(None).config_error()?;
    let verb = if subscribe {
        "subscribing to"
    } else {
        "unsubscribing from"
    };
    for topic in &args.topics {
        let before = credentials.clone();
        let result = if subscribe {
            core.subscribe_topic(&mut credentials, topic).await
        } else {
            core.unsubscribe_topic(&mut credentials, topic).await
        };
        // A refreshed auth token is kept even when the request then failed.
        if credentials != before {
            common::write_credentials(&args.file, &credentials, true)?;
        }
        if let Err(error) = result {
            return Err(pullkin_error(error, &format!("{verb} the topic {topic:?}")));
        }
        print_line(topic.strip_prefix("/topics/").unwrap_or(topic))?;
    }
    log::info(
        None,
        format_args!(
            "{} now records {} topic(s)",
            args.file.display(),
            credentials.topics().count()
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a credentials file in this tool's own format (one that may be rewritten in
/// place).
pub(crate) fn read_own(path: &Path) -> Result<AppCredentials> {
    let (credentials, native) = common::read_credentials_and_format(path).config_error()?;
    if !native {
        return Err(CliError::config(format!(
            "{} is not in pullkin's format: convert it first (pullkin credentials import {} \
             --out app.json)",
            path.display(),
            path.display()
        )));
    }
    Ok(credentials)
}

/// A registration call's error with what was being done, of the kind it is: a bad
/// argument (2), a configuration that cannot work (78), else a failure (1).
pub(crate) fn pullkin_error(error: PullkinError, doing: &str) -> CliError {
    let kind = match &error {
        PullkinError::Topic(TopicError::InvalidName { .. }) => ErrorKind::Usage,
        PullkinError::Topic(_) | PullkinError::InvalidParams(_) | PullkinError::Config(_) => {
            ErrorKind::Config
        }
        _ => ErrorKind::Failure,
    };
    let Err(wrapped) = Err::<(), _>(error).context(doing) else {
        return CliError::msg(doing);
    };
    wrapped.kind(kind)
}
