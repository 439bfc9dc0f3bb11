//! `pullkin emulator`: `fcm-emulator` as a standalone process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fcm_emulator::Emulator;

use crate::common::print_line;
use crate::error::{Context, Result};
use crate::{log, signal};

pub(crate) const EXAMPLES: &str = "Example:
  pullkin emulator --http-port 4443 --mcs-port 5228 --ca-out ca.pem
  # prints, one per line:
  #   endpoints=https://127.0.0.1:4443
  #   mcs=127.0.0.1:5228
  #   ca=ca.pem
  # then, in another shell:
  export PULLKIN_ENDPOINTS=https://127.0.0.1:4443 PULLKIN_MCS=127.0.0.1:5228 PULLKIN_CA=ca.pem
  pullkin register --web --sender-id 1 --app-id 1:1:web:1 --api-key k --project-id p --out web.json
  pullkin listen web.json

The state (devices, registrations, queued messages) lives in memory and ends with the
process. The certificate is made at start by a fresh CA: clients trust it with --ca.";

/// Arguments of `pullkin emulator`.
#[derive(Debug, Args)]
pub(crate) struct EmulatorArgs {
    /// The address to listen on.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// The HTTPS port of the HTTP APIs (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    http_port: u16,
    /// The port of the MCS server (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    mcs_port: u16,
    /// Where to write the CA certificate (PEM) that clients must trust. Default: a file
    /// in the temporary directory, removed at exit.
    #[arg(long, value_name = "PATH")]
    ca_out: Option<PathBuf>,
    /// Take Web Push requests without a VAPID signature (by default they are answered
    /// 401, as Google does; signed ones are checked either way).
    #[arg(long)]
    accept_unsigned_webpush: bool,
}

/// Runs `pullkin emulator`.
pub(crate) async fn run(args: EmulatorArgs) -> Result<ExitCode> {
    let stop = signal::watch()?;
    let mut builder = Emulator::builder()
        .http_addr(SocketAddr::new(args.bind, args.http_port))
        .mcs_addr(SocketAddr::new(args.bind, args.mcs_port))
        .accept_unsigned_webpush(args.accept_unsigned_webpush);
    if !args.bind.is_loopback() && !args.bind.is_unspecified() {
        builder = builder.subject_alt_name(args.bind.to_string());
    }
    let emulator = builder.start().await.context("starting the emulator")?;
    let (ca_path, temporary) = match &args.ca_out {
        Some(path) => (path.clone(), false),
        None => (
            std::env::temp_dir().join(format!("pullkin-emulator-{}.ca.pem", std::process::id())),
            true,
        ),
    };
    std::fs::write(&ca_path, emulator.ca_cert_pem())
        .with_context(|| format!("writing the CA certificate to {}", ca_path.display()))?;
    // Printed absolute, so that it works from any directory.
    let ca_path = std::path::absolute(&ca_path).unwrap_or(ca_path);
    let base = emulator
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    print_line(&format!("endpoints={base}"))?;
    print_line(&format!("mcs={}", emulator.mcs_addr()))?;
    print_line(&format!("ca={}", ca_path.display()))?;
    log::info(
        None,
        format_args!(
            "fcm-emulator running; for other shells:\n  export PULLKIN_ENDPOINTS={base} \
             PULLKIN_MCS={} PULLKIN_CA={}\nstop it with Ctrl-C",
            emulator.mcs_addr(),
            ca_path.display()
        ),
    );
    let signal = stop.await;
    log::info(None, format_args!("{signal}: stopping the emulator"));
    emulator.shutdown().await;
    if temporary {
        let _ = std::fs::remove_file(&ca_path);
    }
    Ok(ExitCode::SUCCESS)
}
