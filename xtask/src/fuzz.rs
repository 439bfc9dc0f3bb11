//! Fuzzing with cargo-fuzz on stable Rust (`-s none`, `RUSTC_BOOTSTRAP=1` for the
//! instrumentation flags). cargo-fuzz is installed when missing; `fuzz/Cargo.lock` must be
//! up to date (checked before building, as cargo-fuzz has no `--locked`).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{Result, cargo, run as sh};

/// Seconds each target runs in the smoke run.
const SMOKE_SECONDS: u64 = 30;

/// `--smoke`, `--all [--time S]` or `TARGET [--time S]`.
pub(crate) fn run(root: &Path, args: &[&str]) -> Result {
    let mut time = None;
    let mut selection = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match *arg {
            "--smoke" => selection = Some(None),
            "--all" => selection = Some(None),
            "--time" => {
                let value = rest.next().ok_or("--time needs a number of seconds")?;
                time = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("--time takes whole seconds, not {value:?}"))?,
                );
            }
            target if !target.starts_with('-') => selection = Some(Some(target.to_owned())),
            other => return Err(format!("unknown fuzz option {other}")),
        }
    }
    let selection = selection.ok_or("say --smoke, --all or a target name")?;
    let seconds = time.unwrap_or(SMOKE_SECONDS);
    let all = targets(root)?;
    let chosen: Vec<String> = match selection {
        None => all,
        Some(one) if all.contains(&one) => vec![one],
        Some(one) => {
            return Err(format!(
                "no fuzz target {one}; there are: {}",
                all.join(", ")
            ));
        }
    };
    check_lock(root)?;
    ensure_cargo_fuzz()?;
    let env = [("RUSTC_BOOTSTRAP", "1")];
    sh(
        &cargo(),
        &["fuzz", "build", "--fuzz-dir", "fuzz", "-s", "none"],
        &env,
    )?;
    for target in &chosen {
        let corpus = root.join("fuzz/corpus").join(target);
        fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        let seeds = root.join("fuzz/seeds").join(target);
        let max_time = format!("-max_total_time={seconds}");
        let mut args = vec![
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            "-s",
            "none",
            target.as_str(),
        ];
        let corpus_arg = corpus.display().to_string();
        let seeds_arg = seeds.display().to_string();
        args.push(&corpus_arg);
        if seeds.is_dir() {
            args.push(&seeds_arg);
        }
        args.extend_from_slice(&[
            "--",
            &max_time,
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ]);
        sh(&cargo(), &args, &env)?;
    }
    println!(
        "fuzz: {} target(s) ran {seconds} s each with no crash",
        chosen.len()
    );
    Ok(())
}

/// The `[[bin]]` names of `fuzz/Cargo.toml`.
fn targets(root: &Path) -> Result<Vec<String>> {
    let manifest = root.join("fuzz/Cargo.toml");
    let text = fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name") {
            let name = value
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        return Err("fuzz/Cargo.toml declares no [[bin]] targets".to_owned());
    }
    Ok(names)
}

/// Fails when `fuzz/Cargo.lock` is stale. cargo-fuzz has no `--locked` (and passes none to
/// the `cargo build` it runs), so its build would quietly rewrite the lock file instead;
/// `cargo metadata --locked` resolves the same workspace and refuses to change it.
fn check_lock(root: &Path) -> Result {
    let manifest = root.join("fuzz/Cargo.toml");
    let manifest = manifest
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", manifest.display()))?;
    let args = [
        "metadata",
        "--locked",
        "--format-version",
        "1",
        "--manifest-path",
        manifest,
    ];
    println!("$ {} {}", cargo(), args.join(" "));
    let out = Command::new(cargo())
        .args(args)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", cargo()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo metadata --locked` failed for fuzz/ (if fuzz/Cargo.lock is out of date, \
             run `cargo metadata --format-version 1` in fuzz/ and commit the lock file): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ensure_cargo_fuzz() -> Result {
    let present = Command::new(cargo())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    sh(&cargo(), &["install", "cargo-fuzz", "--locked"], &[])
}
