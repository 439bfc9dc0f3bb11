//! Project automation, in Rust so that it runs wherever cargo does.
//!
//! ```text
//! cargo xtask ci                      fmt check, clippy, tests, codegen check, fuzz smoke
//! cargo xtask codegen [--check]       regenerate the protobuf code (or fail when stale)
//! cargo xtask fuzz --smoke            every fuzz target for a short time
//! cargo xtask fuzz --all --time S     every fuzz target for S seconds each
//! cargo xtask fuzz TARGET [--time S]  one fuzz target
//! cargo xtask bench                   the criterion benchmarks
//! cargo xtask demo                    the end-to-end demo against the local emulator
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

mod codegen;
mod fuzz;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// A failed task, with the reason shown to the user.
type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["ci", rest @ ..] => ci(rest),
        ["codegen"] => codegen::generate(&root()),
        ["codegen", "--check"] => codegen::check(&root()),
        ["fuzz", rest @ ..] => fuzz::run(&root(), rest),
        ["bench", rest @ ..] => bench(rest),
        ["demo", rest @ ..] => demo(rest),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask ci [--no-fuzz] | codegen [--check] | \
fuzz (--smoke | --all [--time S] | TARGET [--time S]) | bench [criterion args] | demo";

/// The workspace root (the parent of this crate's directory).
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs a command in the workspace root, failing when it fails.
fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result {
    println!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The whole CI gate. `--no-fuzz` skips the fuzz smoke run (for quick local checks).
fn ci(rest: &[&str]) -> Result {
    let fuzz = !rest.contains(&"--no-fuzz");
    let cargo = cargo();
    run(&cargo, &["fmt", "--all", "--", "--check"], &[])?;
    run(
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    codegen::check(&root())?;
    if Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        run(
            &cargo,
            &[
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--no-fail-fast",
            ],
            &[],
        )?;
        // nextest does not run doctests.
        run(&cargo, &["test", "--workspace", "--locked", "--doc"], &[])?;
    } else {
        run(&cargo, &["test", "--workspace", "--locked"], &[])?;
    }
    run(
        &cargo,
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    if fuzz {
        fuzz::run(&root(), &["--smoke"])?;
    }
    println!("xtask ci: all checks passed");
    Ok(())
}

/// Runs the criterion benchmarks of the workspace.
fn bench(rest: &[&str]) -> Result {
    let mut args = vec!["bench", "--workspace", "--locked"];
    if !rest.is_empty() {
        args.push("--");
        args.extend_from_slice(rest);
    }
    run(&cargo(), &args, &[])
}

/// Runs `pullkin demo`: the emulator, registration, listening and delivery, end to end.
fn demo(rest: &[&str]) -> Result {
    if !root().join("crates/pullkin-cli/Cargo.toml").is_file() {
        return Err(
            "the demo is not yet available: it arrives with the `pullkin` command line \
                    (crate pullkin-cli)"
                .to_owned(),
        );
    }
    let mut args = vec![
        "run",
        "--release",
        "--locked",
        "-p",
        "pullkin-cli",
        "--",
        "demo",
    ];
    args.extend_from_slice(rest);
    run(&cargo(), &args, &[])
}
