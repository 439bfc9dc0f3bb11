//! `pullkin fleet …` driven as subprocesses, against the machine's PostgreSQL (each test
//! creates a database of its own on `PULLKIN_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, and drops it at the end) and a `pullkin
//! emulator` process: migrations, registrations, credentials files of every kind, two
//! worker processes sharing the identities, `pullkin send`, `tail --consumer` printing
//! each message once across runs, a worker killed with SIGKILL and the other taking
//! over, removal, pruning, key rotation, readiness, and the errors an operator meets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use pullkin_test_support::postgres::{ScratchDatabase, execute_blocking};
use serde_json::Value;
use tempfile::TempDir;

use crate::cli::{EmulatorProc, Proc, assert_fails_with, json, run_ok};
use crate::common::{WAIT, pullkin, run, text};

/// The schema version of this build, as `migrate` prints it.
const VERSION: i32 = pullkin_fleet::SCHEMA_VERSION;

/// The lease TTL of the workers in these tests: a take-over within seconds.
const TTL: &str = "3";

/// A database created for one test and dropped when this is dropped.
struct TestDb(ScratchDatabase);

impl TestDb {
    fn create() -> Self {
        Self(ScratchDatabase::create_blocking("pullkin_cli_test"))
    }

    fn url(&self) -> &str {
        &self.0.url
    }

    fn execute(&self, sql: &str) {
        execute_blocking(self.url(), sql).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A test's fleet: its database, a directory, and a key file in it.
struct Fleet {
    db: TestDb,
    dir: TempDir,
    key: PathBuf,
}

impl Fleet {
    fn new() -> Self {
        let db = TestDb::create();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("fleet.key");
        let id = run_ok(&["fleet", "generate-key", key.to_str().unwrap()]);
        assert_eq!(id.trim().len(), 16, "{id}");
        Self { db, dir, key }
    }

    fn migrated() -> Self {
        let fleet = Self::new();
        fleet.ok(&["migrate"]);
        fleet
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `fleet COMMAND… --database URL`.
    fn args<'a>(&'a self, command: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["fleet"];
        args.extend_from_slice(command);
        args.extend(["--database", self.db.url()]);
        args
    }

    /// `fleet COMMAND… --database URL --key-file KEY`.
    fn keyed<'a>(&'a self, command: &[&'a str]) -> Vec<&'a str> {
        let mut args = self.args(command);
        args.extend(["--key-file", self.key.to_str().unwrap()]);
        args
    }

    fn ok(&self, command: &[&str]) -> String {
        run_ok(&self.args(command))
    }

    fn ok_keyed(&self, command: &[&str]) -> String {
        run_ok(&self.keyed(command))
    }

    /// `fleet status --json`, the database named by `PULLKIN_DATABASE_URL`.
    fn status(&self) -> Value {
        let output = pullkin()
            .env("PULLKIN_DATABASE_URL", self.db.url())
            .args(["fleet", "status", "--json", "--lease-ttl", TTL])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        json(text(&output.stdout).trim())
    }

    /// The status once `accept` holds.
    fn wait_status(&self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status();
            if accept(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `fleet register --count N` against the emulator: name → FCM token.
    fn register(&self, emulator: &EmulatorProc, count: u32, web: bool) -> BTreeMap<String, String> {
        let count = count.to_string();
        let mut command = vec![
            "register",
            "--count",
            &count,
            "--sender-id",
            "42",
            "--api-key",
            "AIza-test",
            "--project-id",
            "fleet",
        ];
        if web {
            command.extend(["--web", "--app-id", "1:42:web:0a1b"]);
        } else {
            command.extend([
                "--app-id",
                "1:42:android:0a1b",
                "--app-name",
                "com.example.fleet",
            ]);
        }
        command.extend(emulator.net());
        self.ok_keyed(&command)
            .lines()
            .map(|line| {
                let (name, token) = line.split_once(' ').unwrap();
                (name.to_owned(), token.to_owned())
            })
            .collect()
    }

    /// A `fleet worker` process with id `id`, the key file `key`.
    fn worker_with(&self, emulator: &EmulatorProc, id: &str, key: &Path) -> Command {
        let mut command = pullkin();
        command.args(self.args(&["worker", "--worker-id", id, "--lease-ttl", TTL]));
        command.args(["--key-file", key.to_str().unwrap(), "--mcs", &emulator.mcs]);
        command.args(emulator.net());
        command
    }

    fn worker(&self, emulator: &EmulatorProc, id: &str) -> Proc {
        let worker = Proc::spawn_command(self.worker_with(emulator, id, &self.key));
        worker.wait_stderr(&[&format!("worker {id} started")]);
        worker
    }

    /// `fleet tail ARGS…` to completion (within the wait); its lines, parsed.
    fn tail(&self, extra: &[&str]) -> Vec<Value> {
        let out = self.path(&format!("tail-{}.jsonl", uuid::Uuid::new_v4().simple()));
        let mut child = pullkin()
            .args(self.args(&[&["tail"][..], extra].concat()))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, &format!("tail {extra:?}"));
        let stderr = child
            .stderr
            .take()
            .map(|mut e| {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                s
            })
            .unwrap_or_default();
        assert!(status.success(), "tail {extra:?}: {status}: {stderr}");
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(json)
            .collect()
    }
}

/// Waits for a child to exit, killing it (and failing) after the wait.
fn wait_exit(child: &mut std::process::Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn identities(status: &Value) -> &Vec<Value> {
    status["identities"].as_array().unwrap()
}

/// Identity name → the worker holding it (live), for identities connected now.
fn connected_holders(status: &Value) -> BTreeMap<String, String> {
    identities(status)
        .iter()
        .filter(|i| i["lease_live"] == true && i["state"] == "connected")
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["worker"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Sends one message to each device, `kind` = `<round>-<name>`.
fn send_round(emulator: &EmulatorProc, tokens: &BTreeMap<String, String>, round: &str) {
    for (name, token) in tokens {
        emulator.send_token(token, &format!("{round}-{name}"));
    }
}

/// Checks a tail's lines are this round's messages, one per device; returns their ids.
fn check_round(lines: &[Value], tokens: &BTreeMap<String, String>, round: &str) -> Vec<String> {
    let mut kinds: Vec<String> = lines
        .iter()
        .map(|line| {
            let app = line["app"].as_str().unwrap();
            let kind = line["data"]["kind"].as_str().unwrap();
            assert_eq!(kind, format!("{round}-{app}"), "{line}");
            assert_eq!(line["notification"]["title"], "hi", "{line}");
            kind.to_owned()
        })
        .collect();
    kinds.sort();
    let expected: Vec<String> = tokens.keys().map(|n| format!("{round}-{n}")).collect();
    assert_eq!(kinds, expected, "{lines:?}");
    lines
        .iter()
        .map(|l| l["persistent_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn fleet_register_workers_tail_takeover_remove_and_prune() {
    let fleet = Fleet::new();
    // Migrating twice: the second finds it done.
    assert_eq!(fleet.ok(&["migrate"]).trim(), VERSION.to_string());
    assert_eq!(fleet.ok(&["migrate"]).trim(), VERSION.to_string());

    let emulator = EmulatorProc::start(fleet.dir.path());
    let tokens = fleet.register(&emulator, 3, false);
    assert_eq!(
        tokens.keys().cloned().collect::<Vec<_>>(),
        ["device-1", "device-2", "device-3"]
    );
    let status = fleet.status();
    assert_eq!(status["schema_version"], VERSION);
    let listed: Vec<(&str, &str, &Value)> = identities(&status)
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap(),
                i["persona"].as_str().unwrap(),
                &i["worker"],
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("device-1", "android", &Value::Null),
            ("device-2", "android", &Value::Null),
            ("device-3", "android", &Value::Null)
        ]
    );
    // The text form names them too.
    let table = fleet.ok(&["status"]);
    assert!(
        table.contains("device-2") && table.contains("IDENTITY"),
        "{table}"
    );

    // Two workers share them: two and one.
    let a = fleet.worker(&emulator, "A");
    let b = fleet.worker(&emulator, "B");
    let status = fleet.wait_status("both workers holding, everything connected", |s| {
        let holders = connected_holders(s);
        let held: BTreeSet<&String> = holders.values().collect();
        holders.len() == 3 && held.len() == 2
    });
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{status:#}");
    assert!(
        workers
            .iter()
            .all(|w| w["live"] == true && w["held"].as_i64() >= Some(1))
    );
    a.wait_stderr(&["] connected"]);
    b.wait_stderr(&["] connected"]);

    // Each message printed once across runs: the second run prints only the new ones.
    send_round(&emulator, &tokens, "r1");
    let first = fleet.tail(&["--consumer", "x", "--follow", "--count", "3"]);
    let mut seen: BTreeSet<String> = check_round(&first, &tokens, "r1").into_iter().collect();
    assert_eq!(seen.len(), 3);
    assert!(fleet.tail(&["--consumer", "x"]).is_empty(), "committed");
    send_round(&emulator, &tokens, "r2");
    let second = fleet.tail(&["--consumer", "x", "--follow", "--count", "3"]);
    for id in check_round(&second, &tokens, "r2") {
        assert!(seen.insert(id), "printed twice: {second:?}");
    }
    assert!(fleet.tail(&["--consumer", "x"]).is_empty());
    // A transient tail from the first message: all six, as stored, with their seq; the
    // cursor of x is not touched.
    let all = fleet.tail(&["--from", "1", "--with-seq"]);
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(
        all.windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64())
    );
    assert_eq!(all[0]["persistent_id"], first[0]["persistent_id"]);
    let status = fleet.status();
    assert_eq!(status["consumers"][0]["name"], "x");
    assert_eq!(status["consumers"][0]["behind"], 0);
    assert_eq!(status["notifications"], 6);

    // SIGKILL the worker holding two: the other takes them over after the TTL.
    let holders = connected_holders(&status);
    let a_holds = holders.values().filter(|w| *w == "A").count();
    let (mut killed, survivor, survivor_id) = if a_holds == 2 {
        (a, b, "B")
    } else {
        (b, a, "A")
    };
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let killed_at = Instant::now();
    fleet.wait_status("the survivor holding every identity", |s| {
        let holders = connected_holders(s);
        holders.len() == 3 && holders.values().all(|w| w == survivor_id)
    });
    assert!(killed_at.elapsed() < Duration::from_secs(15));
    let status = fleet.wait_status("the killed worker counted gone", |s| {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["live"] == false)
    });
    let survivor_row = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == survivor_id)
        .unwrap();
    assert_eq!(survivor_row["held"], 3, "{status:#}");
    send_round(&emulator, &tokens, "r3");
    let third = fleet.tail(&["--consumer", "x", "--follow", "--count", "3"]);
    for id in check_round(&third, &tokens, "r3") {
        assert!(seen.insert(id), "printed twice: {third:?}");
    }

    // Remove one: gone from the status, its messages kept until pruned.
    assert_eq!(fleet.ok(&["remove", "device-3"]).trim(), "device-3");
    let status = fleet.status();
    assert_eq!(identities(&status).len(), 2);
    assert_eq!(status["notifications"], 9);
    assert_fails_with(
        1,
        &fleet.args(&["remove", "device-3"]),
        &["no identity named \"device-3\""],
    );
    // Prune: everything x has passed, and the killed worker's row.
    let pruned = fleet.ok(&["prune", "--older-than", "0"]);
    assert_eq!(pruned, "notifications=9\nworkers=1\n");
    let status = fleet.status();
    assert_eq!(status["notifications"], 0);
    let workers: Vec<&Value> = status["workers"].as_array().unwrap().iter().collect();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["id"], survivor_id);
    // A default prune (older than 7 days) finds nothing.
    assert_eq!(fleet.ok(&["prune"]), "notifications=0\nworkers=0\n");

    // SIGUSR1 checks the connections; SIGTERM hands everything off and exits 0.
    survivor.signal("USR1");
    survivor.wait_stderr(&["SIGUSR1: checking every connection now"]);
    let (exit, stderr) = survivor.terminate();
    assert!(exit.success(), "{stderr}");
    assert!(stderr.contains("SIGTERM: stopping"), "{stderr}");
    assert!(
        stderr.contains(&format!("worker {survivor_id} stopped")),
        "{stderr}"
    );
    let status = fleet.status();
    for identity in identities(&status) {
        assert_eq!(identity["lease_live"], false, "{identity}");
        assert_eq!(identity["state"], "released", "{identity}");
    }
    assert!(
        status["workers"].as_array().unwrap().is_empty(),
        "{status:#}"
    );
}

#[cfg(unix)]
#[test]
fn rotate_key_then_a_worker_starts_with_the_new_key_and_refuses_the_old() {
    let fleet = Fleet::migrated();
    let emulator = EmulatorProc::start(fleet.dir.path());
    let tokens = fleet.register(&emulator, 1, true);
    assert_eq!(tokens.keys().collect::<Vec<_>>(), ["device-1"]);
    let old_key = fleet.key.clone();
    let new_key = fleet.path("new.key");
    let new_id = run_ok(&["fleet", "generate-key", new_key.to_str().unwrap()]);
    let mut rotate = fleet.keyed(&["rotate-key"]);
    rotate.extend(["--new-key-file", new_key.to_str().unwrap()]);
    assert_eq!(
        run_ok(&rotate),
        format!("rotated=1\nkey_id={}", new_id.trim()) + "\n"
    );
    // Again: nothing left to do.
    assert_eq!(
        run_ok(&rotate),
        format!("rotated=0\nkey_id={}", new_id.trim()) + "\n"
    );

    // The old key: refused at once, in one line.
    let output = fleet
        .worker_with(&emulator, "old", &old_key)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: wrong fleet key"), "{stderr}");
    assert!(stderr.contains("rotate-key"), "{stderr}");
    // Nor can anything be added with it.
    let python = fleet.path("python.json");
    std::fs::write(&python, crate::cli::python_credentials()).unwrap();
    assert_fails_with(
        78,
        &fleet.keyed(&["add", python.to_str().unwrap()]),
        &["wrong fleet key"],
    );
    // A rotation from a key that seals nothing fails whole.
    let other = fleet.path("other.key");
    run_ok(&["fleet", "generate-key", other.to_str().unwrap()]);
    let mut from_other = fleet.args(&["rotate-key", "--key-file", other.to_str().unwrap()]);
    from_other.extend(["--new-key-file", old_key.to_str().unwrap()]);
    assert_fails_with(
        78,
        &from_other,
        &["wrong fleet key", "does not open identity"],
    );

    // The new key: the worker starts, tells the service manager, connects, receives.
    let notify_path = fleet.path("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut command = fleet.worker_with(&emulator, "new", &new_key);
    command.env("NOTIFY_SOCKET", &notify_path);
    let worker = Proc::spawn_command(command);
    worker.wait_stderr(&["[device-1] connected"]);
    let mut datagrams = Vec::new();
    let mut wait_for = |line: &str| {
        let deadline = Instant::now() + WAIT;
        let mut buffer = [0u8; 1024];
        while Instant::now() < deadline {
            if let Ok(n) = notify.recv(&mut buffer) {
                let datagram = String::from_utf8_lossy(&buffer[..n]).into_owned();
                datagrams.push(datagram.clone());
                if datagram.lines().any(|l| l == line) {
                    return;
                }
            }
        }
        panic!("no {line} on the notify socket: {datagrams:?}");
    };
    wait_for("READY=1");
    wait_for("STATUS=1/1 connected");
    let (token_name, token) = tokens.iter().next().unwrap();
    emulator.send_token(token, "after-rotation");
    let lines = fleet.tail(&["--consumer", "y", "--follow", "--count", "1"]);
    assert_eq!(lines[0]["app"], token_name.as_str());
    assert_eq!(lines[0]["data"]["kind"], "after-rotation");
    assert_eq!(lines[0]["encoding"], "aesgcm");
    let (exit, stderr) = worker.terminate();
    assert!(exit.success(), "{stderr}");
    wait_for("STOPPING=1");
}

#[test]
fn add_reads_every_kind_of_credentials_file_and_remove_removes() {
    let fleet = Fleet::migrated();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pullkin/tests/fixtures");
    let files: Vec<PathBuf> = [
        "pullkin_credentials.json",
        "firebase_messaging_credentials.json",
        "legacy_camelcase_credentials.json",
    ]
    .iter()
    .map(|name| fixtures.join(name))
    .collect();
    let python = fleet.path("python.json");
    std::fs::write(&python, crate::cli::python_credentials()).unwrap();
    let mut add: Vec<&str> = vec!["add"];
    add.extend(files.iter().map(|f| f.to_str().unwrap()));
    add.push(python.to_str().unwrap());
    assert_eq!(
        fleet.ok_keyed(&add),
        "pullkin_credentials\nfirebase_messaging_credentials\nlegacy_camelcase_credentials\npython\n"
    );
    // --name for a single file.
    assert_eq!(
        fleet
            .ok_keyed(&["add", files[0].to_str().unwrap(), "--name", "shop-frontend"])
            .trim(),
        "shop-frontend"
    );
    let status = fleet.status();
    let names: Vec<&str> = identities(&status)
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "pullkin_credentials",
            "firebase_messaging_credentials",
            "legacy_camelcase_credentials",
            "python",
            "shop-frontend"
        ]
    );
    assert!(identities(&status).iter().all(|i| i["worker"].is_null()));

    // A name in use, --name with two files, a file that does not parse: nothing added.
    assert_fails_with(
        1,
        &fleet.keyed(&["add", files[0].to_str().unwrap()]),
        &["\"pullkin_credentials\" exists already"],
    );
    assert_fails_with(
        2,
        &fleet.keyed(&[
            "add",
            files[0].to_str().unwrap(),
            files[1].to_str().unwrap(),
            "--name",
            "x",
        ]),
        &["--name names one identity"],
    );
    let bad = fleet.path("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let fresh = fleet.path("fresh.json");
    std::fs::write(&fresh, crate::cli::python_credentials()).unwrap();
    assert_fails_with(
        78,
        &fleet.keyed(&["add", fresh.to_str().unwrap(), bad.to_str().unwrap()]),
        &["bad.json", "malformed credentials JSON"],
    );
    assert_eq!(identities(&fleet.status()).len(), 5);

    assert_eq!(
        fleet.ok(&["remove", "python", "shop-frontend"]),
        "python\nshop-frontend\n"
    );
    assert_eq!(identities(&fleet.status()).len(), 3);
    assert_fails_with(
        1,
        &fleet.args(&["remove", "nobody"]),
        &["no identity named \"nobody\""],
    );
}

/// Asserts a clap usage error: exit status 2, `error:` first, naming `needle`.
fn assert_usage(args: &[&str], needle: &str) {
    let output: Output = run(args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?} should mention {needle:?}: {stderr}"
    );
}

#[test]
fn fleet_errors_are_one_line_with_the_exit_status_of_their_kind() {
    let fleet = Fleet::new();
    let key = fleet.key.to_str().unwrap();
    let python = fleet.path("python.json");
    std::fs::write(&python, crate::cli::python_credentials()).unwrap();
    let python = python.to_str().unwrap();

    // A database nobody listens at (a port just closed): 1, named without its password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("postgres://postgres:hunter2@127.0.0.1:{port}/fleet");
    for command in [
        &["fleet", "status"][..],
        &["fleet", "migrate"],
        &["fleet", "tail", "--consumer", "x"],
        &["fleet", "worker", "--key-file", key, "--mcs", "127.0.0.1:9"],
    ] {
        let args = [command, &["--database", &closed]].concat();
        assert_fails_with(
            1,
            &args,
            &[&format!(
                "cannot reach the database postgres://postgres@127.0.0.1:{port}/fleet"
            )],
        );
        assert!(!text(&run(&args).stderr).contains("hunter2"));
    }
    // A URL that does not parse: configuration.
    assert_fails_with(
        78,
        &[
            "fleet",
            "status",
            "--database",
            "postgres://u:hunter2@127.0.0.1:notaport/x",
        ],
        &["bad database URL"],
    );

    // A database never migrated: 78, both versions, what to run.
    let unmigrated =
        format!("wrong schema version: database 0 (no fleet schema yet), this build {VERSION}");
    assert_fails_with(
        78,
        &fleet.args(&["status"]),
        &[&unmigrated, "run `pullkin fleet migrate`"],
    );
    assert_fails_with(
        78,
        &fleet.keyed(&["worker", "--mcs", "127.0.0.1:9"]),
        &[&unmigrated, "run `pullkin fleet migrate`"],
    );
    fleet.ok(&["migrate"]);

    // No key, a key file that is not there, one that holds no key: 78.
    assert_fails_with(
        78,
        &fleet.args(&["add", python]),
        &["no fleet key", "--key-file", "PULLKIN_FLEET_KEY_FILE"],
    );
    assert_fails_with(
        78,
        &fleet.args(&["worker", "--mcs", "127.0.0.1:9"]),
        &["no fleet key"],
    );
    let missing = fleet.path("missing.key");
    assert_fails_with(
        78,
        &fleet.args(&["add", python, "--key-file", missing.to_str().unwrap()]),
        &["bad fleet key file", "missing.key", "No such file"],
    );
    let junk = fleet.path("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    assert_fails_with(
        78,
        &fleet.args(&[
            "worker",
            "--key-file",
            junk.to_str().unwrap(),
            "--mcs",
            "127.0.0.1:9",
        ]),
        &["bad fleet key file", "junk.key", "64 hex characters"],
    );
    // The key from the environment works as --key-file does.
    let output = pullkin()
        .env("PULLKIN_FLEET_KEY_FILE", key)
        .args(fleet.args(&["add", python]))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    // A key other than the one the identities are sealed with.
    let other = fleet.path("other.key");
    run_ok(&["fleet", "generate-key", other.to_str().unwrap()]);
    assert_fails_with(
        78,
        &fleet.args(&[
            "worker",
            "--key-file",
            other.to_str().unwrap(),
            "--mcs",
            "127.0.0.1:9",
        ]),
        &["wrong fleet key", "seals none of the 1 identities"],
    );

    // Bad flags: usage errors (2).
    assert_usage(&fleet.keyed(&["worker", "--lease-ttl", "0"]), "--lease-ttl");
    assert_usage(&fleet.args(&["tail", "--from", "0"]), "--from");
    assert_usage(
        &fleet.args(&["prune", "--older-than", "7w"]),
        "unknown unit",
    );
    assert_usage(&["fleet", "status"], "--database");
    assert_fails_with(
        2,
        &fleet.keyed(&["worker", "--endpoints", "https://127.0.0.1:9"]),
        &["--endpoints needs --mcs"],
    );

    // A schema newer than this build (bumped by hand): 78 everywhere, migrate too.
    fleet.db.execute(&format!(
        "INSERT INTO pullkin.schema_migrations (version) VALUES ({})",
        VERSION + 1
    ));
    let newer = format!(
        "wrong schema version: database {}, this build {VERSION}",
        VERSION + 1
    );
    for command in [
        fleet.args(&["status"]),
        fleet.args(&["migrate"]),
        fleet.args(&["tail"]),
        fleet.keyed(&["worker", "--mcs", "127.0.0.1:9"]),
    ] {
        assert_fails_with(
            78,
            &command,
            &[&newer, "upgrade pullkin", "pullkin fleet migrate"],
        );
    }
}

#[test]
fn every_fleet_command_has_help_with_an_example() {
    for command in [
        "migrate",
        "register",
        "add",
        "remove",
        "worker",
        "status",
        "tail",
        "prune",
        "rotate-key",
        "generate-key",
    ] {
        let help = run_ok(&["fleet", command, "--help"]);
        assert!(help.contains("Example"), "fleet {command} --help:\n{help}");
        assert!(
            help.contains("pullkin fleet"),
            "fleet {command} --help:\n{help}"
        );
    }
    let help = run_ok(&["fleet", "--help"]);
    for command in ["migrate", "worker", "tail", "rotate-key"] {
        assert!(help.contains(command), "{help}");
    }
    // The database URL from the environment is never shown.
    let help = pullkin()
        .env("PULLKIN_DATABASE_URL", "postgres://u:hunter2@db/x")
        .args(["fleet", "status", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = text(&help.stdout);
    assert!(
        help.contains("PULLKIN_DATABASE_URL") && !help.contains("hunter2"),
        "{help}"
    );
}

// ---- tail --sink ----

/// The first value of a query on the database at `url` (an `i64`).
fn query_i64(url: &str, sql: &str) -> Option<i64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        let row = client.query_opt(sql, &[]).await.unwrap();
        drop(client);
        let _ = driver.await;
        row.map(|row| row.get(0))
    })
}

impl Fleet {
    /// Stores messages of identity `name` (created when missing) as a worker would:
    /// persistent ids `0:<name>-<n>`, each line with data `n`.
    fn store(&self, name: &str, ns: &[&str]) {
        self.db.execute(&format!(
            "INSERT INTO pullkin.identities (name, persona, credentials, nonce, key_id) \
             VALUES ('{name}', 'android', '\\x00', '\\x00', 'test') ON CONFLICT (name) DO NOTHING"
        ));
        for n in ns {
            let id = format!("0:{name}-{n}");
            let line = serde_json::json!({
                "app": name,
                "persistent_id": id,
                "data": { "n": n },
            });
            self.db.execute(&format!(
                "INSERT INTO pullkin.notifications \
                 (identity_id, persistent_id, received_at, data, line) \
                 SELECT id, '{id}', now(), '{{\"n\": \"{n}\"}}', '{line}' \
                 FROM pullkin.identities WHERE name = '{name}'"
            ));
        }
    }

    /// The committed position of consumer `name`.
    fn committed(&self, name: &str) -> Option<i64> {
        query_i64(
            self.db.url(),
            &format!("SELECT last_seq FROM pullkin.consumers WHERE name = '{name}'"),
        )
    }
}

/// Lines of a JSON-lines file (none when it does not exist).
fn file_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(json)
        .collect()
}

#[test]
fn tail_to_a_file_sink_writes_each_stored_message_once_across_runs() {
    let fleet = Fleet::migrated();
    fleet.store("shop-1", &["a", "b"]);
    fleet.store("shop-2", &["c"]);
    let out = fleet.path("out.jsonl");
    let sink = format!("file:{}", out.display());
    let printed = fleet.tail(&["--consumer", "x", "--sink", &sink]);
    assert!(printed.is_empty(), "nothing on stdout: {printed:?}");
    let lines = file_lines(&out);
    let keys: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "shop-1:0:shop-1-a",
            "shop-1:0:shop-1-b",
            "shop-2:0:shop-2-c"
        ]
    );
    assert_eq!(lines[2]["app"], "shop-2");
    assert_eq!(lines[2]["data"]["n"], "c");
    assert_eq!(fleet.committed("x"), Some(3));

    // A second run: only what was stored since.
    assert!(fleet.tail(&["--consumer", "x", "--sink", &sink]).is_empty());
    assert_eq!(file_lines(&out).len(), 3, "nothing new, nothing written");
    fleet.store("shop-1", &["d"]);
    fleet.tail(&["--consumer", "x", "--sink", &sink, "--batch", "1"]);
    let lines = file_lines(&out);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["key"], "shop-1:0:shop-1-d");
    assert_eq!(fleet.committed("x"), Some(4));
    // Another consumer is a cursor of its own.
    let other = fleet.path("other.jsonl");
    fleet.tail(&[
        "--consumer",
        "y",
        "--sink",
        &format!("file:{}", other.display()),
    ]);
    assert_eq!(file_lines(&other).len(), 4);
}

/// A stream's messages: (`Nats-Msg-Id`, subject, JSON payload).
async fn stream_messages(client: &async_nats::Client, name: &str) -> Vec<(String, String, Value)> {
    let stream = async_nats::jetstream::new(client.clone())
        .get_stream(name)
        .await
        .unwrap();
    let mut info = stream.clone();
    let state = info.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        if state.messages == 0 {
            break;
        }
        let message = stream.get_raw_message(seq).await.unwrap();
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((
            id,
            message.subject.to_string(),
            serde_json::from_slice(&message.payload).unwrap(),
        ));
    }
    out
}

#[test]
fn tail_to_nats_puts_each_once_and_an_unreachable_sink_holds_the_cursor() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut server = runtime.block_on(pullkin_test_support::nats::NatsServer::start());
    let client = runtime.block_on(server.client());
    let url = server.url("pullkin.{app}");
    let fleet = Fleet::migrated();
    fleet.store("shop-1", &["a", "b"]);
    fleet.store("shop-2", &["c"]);
    let sink_args = [
        "--consumer",
        "x",
        "--sink",
        &url,
        "--create-stream",
        "PULLKIN",
    ];
    assert!(fleet.tail(&sink_args).is_empty());
    assert_eq!(fleet.committed("x"), Some(3));
    // Again, and once more from the start under another name: the stream drops repeats
    // by their keys, the ones `pullkin listen` gives.
    fleet.tail(&sink_args);
    fleet.tail(&["--consumer", "z", "--sink", &url]);
    let stored = runtime.block_on(stream_messages(&client, "PULLKIN"));
    let ids: Vec<&str> = stored.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "shop-1:0:shop-1-a",
            "shop-1:0:shop-1-b",
            "shop-2:0:shop-2-c"
        ]
    );
    assert_eq!(stored[2].1, "pullkin.shop-2");
    assert_eq!(stored[2].2["data"]["n"], "c");

    // Following; the server goes away: what is stored meanwhile is not committed.
    let mut follow = pullkin();
    follow.args(fleet.args(&["tail", "--consumer", "x", "--follow", "--sink", &url]));
    let tail = Proc::spawn_command(follow);
    tail.wait_stderr(&["stored messages →"]);
    runtime.block_on(server.kill());
    fleet.store("shop-1", &["d", "e"]);
    tail.wait_stderr(&["nothing committed, retrying"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fleet.committed("x"), Some(3), "held while the sink is down");
    // Back: both go in, once, and the cursor moves.
    runtime.block_on(server.restart());
    let deadline = Instant::now() + WAIT;
    while fleet.committed("x") != Some(5) {
        assert!(
            Instant::now() < deadline,
            "not committed: {}",
            tail.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = runtime.block_on(server.client());
    let stored = runtime.block_on(stream_messages(&client, "PULLKIN"));
    let ids: BTreeSet<&str> = stored.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(stored.len(), 5, "{ids:?}");
    assert!(ids.contains("shop-1:0:shop-1-d") && ids.contains("shop-1:0:shop-1-e"));
    let (status, stderr) = tail.terminate();
    assert!(status.success(), "{status}: {stderr}");
}
