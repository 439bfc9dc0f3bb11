//! Project automation, in Rust so that it runs wherever cargo does.
//!
//! ```text
//! cargo xtask ci                      fmt, clippy, packaging, tests, codegen check, fuzz smoke
//! cargo xtask codegen [--check]       regenerate the protobuf code (or fail when stale)
//! cargo xtask fuzz --smoke            every fuzz target for a short time
//! cargo xtask fuzz --all --time S     every fuzz target for S seconds each
//! cargo xtask fuzz TARGET [--time S]  one fuzz target
//! cargo xtask bench [--quick] [--fleet]
//!                                     every benchmark (or the fleet's), a table with targets
//! cargo xtask demo                    the end-to-end demo against the local emulator
//! cargo xtask soak [--full] [--debug] [--sink nats|webhook]
//!                                     faults and SIGKILLs against `pullkin listen`
//! cargo xtask soak --fleet [--full] [--debug]
//!                                     failover of `pullkin fleet worker` on PostgreSQL
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

mod bench;
mod codegen;
mod fuzz;
mod services;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by `ci`: every command it runs then builds without incremental state, which a
/// one-shot build never reuses and which would take a large share of the disk.
static ONE_SHOT: AtomicBool = AtomicBool::new(false);

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
        ["bench", rest @ ..] => bench::bench(rest),
        ["demo", rest @ ..] => demo(rest),
        ["soak", rest @ ..] => soak(rest),
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
fuzz (--smoke | --all [--time S] | TARGET [--time S]) | bench [--quick] [--fleet | --listen] | demo | \
soak [--full] [--debug] [--sink nats|webhook | --fleet] [pullkin-bench soak options]";

/// The workspace root (the parent of this crate's directory).
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs a command in the workspace root, failing when it fails.
fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result {
    println!("$ {program} {}", args.join(" "));
    let mut command = Command::new(program);
    if ONE_SHOT.load(Ordering::Relaxed) {
        command.env("CARGO_INCREMENTAL", "0");
    }
    let status = command
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
    ONE_SHOT.store(true, Ordering::Relaxed);
    disk_report("before");
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
    package(&cargo)?;
    codegen::check(&root())?;
    let nats = services::nats_server()?.to_string_lossy().into_owned();
    // Stopped (when `ci` started it) when this goes out of scope.
    let postgres = services::postgres(&target_dir())?;
    let test_env = [
        ("NATS_SERVER", nats.as_str()),
        ("PULLKIN_TEST_DATABASE_URL", postgres.url.as_str()),
    ];
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
            &test_env,
        )?;
        // nextest does not run doctests.
        run(
            &cargo,
            &["test", "--workspace", "--locked", "--doc"],
            &test_env,
        )?;
    } else {
        run(&cargo, &["test", "--workspace", "--locked"], &test_env)?;
    }
    // webpush-ece on its own, with each P-256 backend. The workspace runs above unify cargo
    // features, so the CLI's `aws-lc` is on there for everything: the default pure-Rust
    // `p256` build is only checked here (and `aws-lc` without relying on the CLI).
    for features in [&[][..], &["--features", "aws-lc"][..]] {
        let mut clippy = vec!["clippy", "-p", "webpush-ece", "--all-targets", "--locked"];
        clippy.extend_from_slice(features);
        clippy.extend_from_slice(&["--", "-D", "warnings"]);
        run(&cargo, &clippy, &[])?;
        let mut test = vec!["test", "-p", "webpush-ece", "--locked"];
        test.extend_from_slice(features);
        run(&cargo, &test, &[])?;
    }
    // The short soak (~2 000 messages under faults and a SIGKILL, about 20 s), on the
    // dev-profile binaries the tests built already, so that CI builds nothing in release;
    // then the same through each durable sink (~5 000 messages, 3 SIGKILLs, a nats-server
    // restart or webhook outages, hangs and lost answers; about 25 s each).
    soak(&["--debug"])?;
    soak(&["--debug", "--sink", "nats"])?;
    soak(&["--debug", "--sink", "webhook"])?;
    // The fleet's failover soak (30 identities, 2 000 messages, three `pullkin fleet
    // worker` processes: a SIGKILL, a SIGSTOP past the lease, a new worker, MCS faults
    // and, with a throwaway PostgreSQL of its own, a database restart; about 40 s).
    soak_with(&["--debug", "--fleet"], Some(postgres.url.as_str()))?;
    run(
        &cargo,
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    if fuzz {
        fuzz::run(&root(), &["--smoke"])?;
    }
    disk_report("after");
    println!("xtask ci: all checks passed");
    Ok(())
}

/// `cargo package` of every publishable crate, so that a manifest crates.io would refuse
/// (a workspace dependency without a version, a normal dependency on an unpublished crate,
/// missing metadata) fails here rather than at release time. The `.crate` files (about
/// 1 MiB together) are removed afterwards.
///
/// `--no-verify`: verifying would unpack each tarball and build it from scratch in its own
/// target directory (every dependency again, once per crate: minutes and gigabytes), and
/// the builds and tests above already compile the same sources. `--allow-dirty` lets it
/// run on a working tree with local edits.
fn package(cargo: &str) -> Result {
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot start {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cargo} metadata` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`{cargo} metadata` printed no JSON: {e}"))?;
    let crates = publishable(&metadata);
    if crates.is_empty() {
        return Err("no publishable crate in the workspace".to_owned());
    }
    let mut args = vec!["package", "--no-verify", "--locked", "--allow-dirty"];
    for name in &crates {
        args.extend_from_slice(&["-p", name]);
    }
    run(cargo, &args, &[])?;
    let dir = target_dir().join("package");
    println!(
        "xtask ci: {} crates packaged ({} KiB in {})",
        crates.len(),
        tree_size(&dir) / 1024,
        dir.display()
    );
    std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// The names of the workspace members that may be published, from `cargo metadata`
/// output: `publish` is `null` when any registry may take the crate and `[]` for
/// `publish = false`.
fn publishable(metadata: &serde_json::Value) -> Vec<String> {
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .map(|ids| ids.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    let mut names: Vec<String> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(&id)))
        .filter(|p| match &p["publish"] {
            serde_json::Value::Null => true,
            serde_json::Value::Array(registries) => !registries.is_empty(),
            _ => false,
        })
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set (relative to the workspace root when
/// relative), else the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root().join(dir)
            }
        })
        .unwrap_or_else(|| root().join("target"))
}

/// Prints the free space where the workspace lives and what the build directories take,
/// so that a run that fills the disk says how close it came (best effort: `df` may be
/// missing, and unreadable entries count as empty).
fn disk_report(when: &str) {
    let root = root();
    let free = Command::new("df")
        .args(["-Pk", "."])
        .current_dir(&root)
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text.lines().nth(1)?.to_owned();
            line.split_whitespace().nth(3)?.parse::<u64>().ok()
        });
    let target = target_dir();
    let built = tree_size(&target) + tree_size(&root.join("fuzz/target"));
    let free = free.map_or_else(|| "unknown".to_owned(), |kib| format!("{} MiB", kib / 1024));
    println!(
        "xtask ci: disk {when}: {free} free, build directories {} MiB",
        built / (1024 * 1024)
    );
}

/// Bytes in the files under `path` (symbolic links not followed).
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .filter_map(std::result::Result::ok)
            .map(|entry| tree_size(&entry.path()))
            .sum()
    })
}

/// Runs `pullkin demo`: the emulator, registration, listening and delivery, end to end.
fn demo(rest: &[&str]) -> Result {
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

/// Builds the listener and the driver (in release mode, or the dev profile with
/// `--debug`), then runs `pullkin-bench soak [--full] …` against the built `pullkin` (see
/// `crates/pullkin-bench/src/soak.rs` for what it checks). Other arguments go to the
/// driver. `--sink nats` needs `nats-server` (found or installed as for the tests, and
/// handed over as `NATS_SERVER`).
///
/// `--fleet` runs the fleet's failover soak (`crates/pullkin-bench/src/fleet_soak.rs`)
/// with `--postgres auto`: a throwaway PostgreSQL of its own, which it restarts mid-run,
/// when `initdb` and `pg_ctl` are installed; otherwise a database of its own on the
/// server the tests use (found or started as for them, as `PULLKIN_TEST_DATABASE_URL`),
/// without the restart.
fn soak(rest: &[&str]) -> Result {
    soak_with(rest, None)
}

/// [`soak`], with the PostgreSQL `ci` found or started already (for `--fleet`).
fn soak_with(rest: &[&str], database_url: Option<&str>) -> Result {
    let nats = if rest.windows(2).any(|w| w == ["--sink", "nats"]) {
        Some(services::nats_server()?.to_string_lossy().into_owned())
    } else {
        None
    };
    let fleet = rest.contains(&"--fleet");
    // Stopped (when this started it) when this goes out of scope.
    let mut postgres = None;
    let database_url = match database_url {
        Some(url) => Some(url.to_owned()),
        None if fleet => {
            let server = services::postgres(&target_dir())?;
            let url = server.url.clone();
            postgres = Some(server);
            Some(url)
        }
        None => None,
    };
    let debug = rest.contains(&"--debug");
    let rest: Vec<&str> = rest.iter().copied().filter(|a| *a != "--debug").collect();
    let mut build = vec![
        "build",
        "--locked",
        "-p",
        "pullkin-bench",
        "-p",
        "pullkin-cli",
    ];
    if !debug {
        build.push("--release");
    }
    run(&cargo(), &build, &[])?;
    let target = target_dir();
    let bin = target.join(if debug { "debug" } else { "release" });
    let bench = bin.join("pullkin-bench");
    let pullkin = bin.join("pullkin");
    let (Some(bench), Some(pullkin)) = (bench.to_str(), pullkin.to_str()) else {
        return Err(format!(
            "the target directory {} is not UTF-8",
            target.display()
        ));
    };
    let mut args = vec!["soak", "--pullkin", pullkin];
    args.extend_from_slice(&rest);
    if fleet && !rest.contains(&"--postgres") {
        args.extend_from_slice(&["--postgres", "auto"]);
    }
    let mut env: Vec<(&str, &str)> = nats.iter().map(|n| ("NATS_SERVER", n.as_str())).collect();
    if let Some(url) = &database_url {
        env.push(("PULLKIN_TEST_DATABASE_URL", url.as_str()));
    }
    let result = run(bench, &args, &env);
    drop(postgres);
    result
}

#[cfg(test)]
mod tests {
    use super::publishable;

    #[test]
    fn publishable_members_are_those_without_publish_false() {
        let metadata = serde_json::json!({
            "workspace_members": ["id-lib", "id-bench", "id-registry"],
            "packages": [
                {"id": "id-lib", "name": "lib", "publish": null},
                {"id": "id-bench", "name": "bench", "publish": []},
                {"id": "id-registry", "name": "registry", "publish": ["crates-io"]},
                {"id": "id-other", "name": "not-a-member", "publish": null},
            ],
        });
        assert_eq!(publishable(&metadata), ["lib", "registry"]);
    }
}
