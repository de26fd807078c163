//! The `muster` binary from the outside: region checking, `up` refusing busy ports with a message
//! that says what to do, and `up` serving then draining on SIGTERM (with a real nats-server child).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn muster(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(args)
        // The developer's environment must not change what the binary is told.
        .env_remove("MUSTER_REGION_DIR")
        .env_remove("MUSTER_DATA_DIR")
        .env_remove("MUSTER_NATS_URL")
        .env_remove("MUSTER_NAMESPACE")
        .env_remove("MUSTER_LOG_FORMAT")
        .env_remove("MUSTER_ESCALATION_POLICY")
        .env_remove("MUSTER_ESCALATION_MINUTE_MS")
        .output()
        .expect("run the muster binary")
}

fn repo_region_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/region")
}

/// `muster token init` in `dir/auth`; returns the verify.pub path for `serve --verify-key`.
fn verify_key(dir: &Path) -> String {
    let auth_dir = dir.join("auth");
    let output = muster(&["token", "init", "--auth-dir", auth_dir.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    auth_dir.join("verify.pub").to_str().unwrap().to_string()
}

/// `text` without the terminal colour sequences tracing writes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for end in chars.by_ref() {
                if end == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn copy_region(to: &Path) {
    for entry in std::fs::read_dir(repo_region_dir()).expect("read data/region") {
        let entry = entry.expect("directory entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a region file");
    }
}

#[test]
fn check_region_accepts_the_shipped_region() {
    let dir = repo_region_dir();
    let output = muster(&["check-region", "--region-dir", dir.to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&output.stderr)
    );
    for expected in [
        "jurisdictions:",
        "township",
        "units:",
        "fire_engine",
        "plans:",
        "partitions: 000000, 390000",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}

#[test]
fn check_region_without_a_directory_uses_the_built_in_sample() {
    let output = muster(&["check-region"]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert!(text(&output.stdout).contains("built-in"));
}

#[test]
fn check_region_points_at_the_broken_line_of_units_toml() {
    let temp = tempfile::tempdir().unwrap();
    copy_region(temp.path());
    let units_path = temp.path().join("units.toml");
    let units = std::fs::read_to_string(&units_path).unwrap();
    let first_home = units
        .find("home_township = \"")
        .expect("a unit with a home township");
    let line_number = units[..first_home].lines().count() + 1;
    let value_start = first_home + "home_township = \"".len();
    let value_end = value_start + units[value_start..].find('"').unwrap();
    let broken = format!("{}000000000{}", &units[..value_start], &units[value_end..]);
    std::fs::write(&units_path, broken).unwrap();

    let output = muster(&[
        "check-region",
        "--region-dir",
        temp.path().to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let expected = format!("units.toml:{line_number}:");
    assert!(
        stderr.contains(&expected),
        "{expected:?} missing from: {stderr}"
    );
    assert!(
        stderr.contains("000000000"),
        "the bad township is not named: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
}

#[test]
fn check_region_names_a_missing_file() {
    let temp = tempfile::tempdir().unwrap();
    copy_region(temp.path());
    std::fs::remove_file(temp.path().join("plans.toml")).unwrap();
    let output = muster(&[
        "check-region",
        "--region-dir",
        temp.path().to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("plans.toml"), "path missing from: {stderr}");
}

#[test]
fn serve_points_at_the_broken_line_of_an_escalation_policy() {
    let temp = tempfile::tempdir().unwrap();
    let policy = temp.path().join("escalation.toml");
    let shipped = std::fs::read_to_string(repo_region_dir().join("escalation.toml")).unwrap();
    // Line 1 of the copy is the broken one.
    std::fs::write(
        &policy,
        format!("version = 0\n{}", shipped.replacen("version = 1\n", "", 1)),
    )
    .unwrap();
    let output = muster(&[
        "serve",
        "escalation",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        temp.path().join("data").to_str().unwrap(),
        "--verify-key",
        &verify_key(temp.path()),
        "--escalation-policy",
        policy.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    let expected = format!("{}:1:", policy.display());
    assert!(
        stderr.contains(&expected),
        "{expected} missing from: {stderr}"
    );
    assert!(
        stderr.contains("version must be at least 1"),
        "problem missing from: {stderr}"
    );
}

#[test]
fn serve_refuses_a_zero_minute_clock() {
    let output = muster(&[
        "serve",
        "escalation",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--escalation-minute-ms",
        "0",
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--escalation-minute-ms"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn up_names_a_busy_grpc_address() {
    let temp = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let data_dir = temp.path().join("data");
    let output = muster(&[
        "up",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--nats-url",
        "nats://127.0.0.1:1",
        "--intake-addr",
        "127.0.0.1:0",
        "--escalation-addr",
        &busy_addr,
        "--dispatch-addr",
        "127.0.0.1:0",
        "--feeds-addr",
        "127.0.0.1:0",
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&busy_addr),
        "address missing from: {stderr}"
    );
    assert!(
        stderr.contains("--escalation-addr"),
        "hint missing from: {stderr}"
    );
}

#[test]
fn up_suggests_another_nats_port_when_it_is_busy() {
    let temp = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let data_dir = temp.path().join("data");
    let output = muster(&[
        "up",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--nats-port",
        &busy_port,
        "--intake-addr",
        "127.0.0.1:0",
        "--escalation-addr",
        "127.0.0.1:0",
        "--dispatch-addr",
        "127.0.0.1:0",
        "--feeds-addr",
        "127.0.0.1:0",
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&busy_port), "port missing from: {stderr}");
    assert!(
        stderr.contains("--nats-port"),
        "hint missing from: {stderr}"
    );
}

/// `muster up` with every port chosen by the system: it prints its endpoints, serves gRPC, and on
/// SIGTERM drains, checkpoints each store for the next start, stops its nats-server child and
/// exits 0.
#[test]
fn up_serves_and_shuts_down_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let data = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::NamedTempFile::new().expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["up", "--nats-port", "0"])
        .args([
            "--intake-addr",
            "127.0.0.1:0",
            "--escalation-addr",
            "127.0.0.1:0",
            "--dispatch-addr",
            "127.0.0.1:0",
            "--feeds-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("MUSTER_NATS_URL")
        .env_remove("MUSTER_SLED_CHECKPOINT_ON_EXIT")
        .stdout(std::process::Stdio::piped())
        .stderr(logs.reopen().expect("log file"))
        .spawn()
        .expect("start muster up");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read muster up's output");
        let done = line.starts_with("Check it with");
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    let nats_pid: i32 = text
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no nats-server pid in:\n{text}"));
    let grpc_addrs: Vec<String> = printed
        .iter()
        .filter(|line| line.ends_with("(gRPC)"))
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(|url| url.trim_start_matches("http://").to_string())
        .collect();
    assert_eq!(grpc_addrs.len(), 3, "three gRPC endpoints in:\n{text}");
    // The admin token is printed and written for musterctl, readable by the owner only.
    let token_file = data.path().canonicalize().unwrap().join("admin.token");
    let written = std::fs::read_to_string(&token_file).expect("admin.token written");
    assert!(written.starts_with("mst1."), "{written}");
    assert!(
        text.contains(written.trim()),
        "the token is printed:\n{text}"
    );
    assert!(
        text.contains(&format!("--token-file {}", token_file.display())),
        "the hint names the token file when musterctl would not find it:\n{text}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for addr in &grpc_addrs {
        std::net::TcpStream::connect(addr)
            .unwrap_or_else(|e| panic!("{addr} does not accept connections: {e}"));
    }

    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for muster up") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "muster up did not stop within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "muster up exited with {status}");
    // Each store was reopened once after its service drained, so the next start reads a fresh
    // sled snapshot instead of replaying this run's log (issue 8, T5).
    let log = strip_ansi(&std::fs::read_to_string(logs.path()).expect("read the log"));
    for service in ["intake", "escalation", "dispatch"] {
        assert!(
            log.lines().any(
                |line| line.contains("store checkpointed for the next start")
                    && line.contains(&format!("service=\"{service}\""))
            ),
            "no checkpoint of {service}'s store in the log:\n{log}"
        );
    }
    // SAFETY: signal 0 only asks whether the process exists.
    let nats_alive = unsafe { libc::kill(nats_pid, 0) } == 0;
    assert!(
        !nats_alive,
        "the nats-server child {nats_pid} outlived muster up"
    );
    for addr in &grpc_addrs {
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{addr} still accepts connections after shutdown"
        );
    }
}

/// `muster` on a store this test process has just closed: sled 0.34 releases its file lock when
/// deferred cleanup runs, which other tests' threads can hold back for a moment.
fn muster_on_store(args: &[&str]) -> Output {
    for _ in 0..100 {
        let output = muster(args);
        if !text(&output.stderr).contains("in use by another process") {
            return output;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the store stayed locked for 5 s: {args:?}")
}

/// A stopped service's store, written through the store API: two incidents (one of them in an
/// old drill), their outbox events, a processed message id.
fn populate_store(dir: &Path) -> store::Store {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day_ms = 24 * 60 * 60 * 1000;
    let store = store::Store::open(dir).unwrap();
    for (key, updated) in [
        ("incident/live/INC-1", now_ms - 30 * day_ms),
        ("incident/drill.old/INC-2", now_ms - 10 * day_ms),
        ("timer/drill.old/0001/INC-2/ack", now_ms - 20 * day_ms),
        ("incident/drill.new/INC-3", now_ms - day_ms),
    ] {
        let mut commit = store::Commit::new();
        commit.put(key, &record(updated)).unwrap();
        commit.event(format!("muster.live.{key}"), key.as_bytes().to_vec());
        commit.processed(format!("msg-{key}"));
        store.commit(&commit).unwrap();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(store.flush()).unwrap();
    store
}

/// A record shaped like the services' (a nested `*_unix_ms` field), as a map of maps, so this
/// test needs no JSON crate.
type Record = std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>;

fn record(updated_at_unix_ms: i64) -> Record {
    Record::from([(
        "record".to_string(),
        [("updated_at_unix_ms".to_string(), updated_at_unix_ms)].into(),
    )])
}

#[test]
fn backup_and_restore_a_stopped_services_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("intake");
    let file = dir.path().join("intake.snap");
    drop(populate_store(&data));

    let output = muster_on_store(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("backup of"), "{stdout}");
    assert!(stdout.contains("outbox"), "{stdout}");

    let restored = dir.path().join("restored");
    let restore = |force: bool| {
        let mut args = vec![
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        muster_on_store(&args)
    };
    let output = restore(false);
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );

    // Restoring over it again needs --force.
    let output = restore(false);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    let output = restore(true);
    assert!(output.status.success(), "{}", text(&output.stderr));
    {
        let store = store::Store::open(&restored).unwrap();
        assert_eq!(store.outbox_len(), 4);
        assert!(store.is_processed("msg-incident/live/INC-1").unwrap());
        assert_eq!(store.scan_prefix::<Record>("incident/").unwrap().len(), 3);
    }

    // A damaged file is refused, saying why, and the target is left alone.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let output = muster_on_store(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--data-dir",
        dir.path().join("other").to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(!dir.path().join("other").exists());
}

#[test]
fn backup_refuses_a_store_in_use_and_a_directory_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("intake");
    let _held = populate_store(&data);
    let file = dir.path().join("x.snap");
    let output = muster(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("in use by another process") && stderr.contains("stop the service"),
        "{stderr}"
    );
    assert!(!file.exists());

    let output = muster(&[
        "backup",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("holds no service store"), "{stderr}");
}

#[test]
fn retention_deletes_old_drills_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("intake");
    drop(populate_store(&data));
    let retention = |dry_run: bool| {
        let mut args = vec![
            "retention",
            "--data-dir",
            data.to_str().unwrap(),
            "--drill-older-than",
            "7",
        ];
        if dry_run {
            args.push("--dry-run");
        }
        let output = muster_on_store(&args);
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let keys = || {
        let store = store::Store::open(&data).unwrap();
        store
            .scan_prefix::<Record>("")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };

    let stdout = retention(true);
    assert!(
        stdout.contains("would delete drill.old: 2 keys"),
        "{stdout}"
    );
    assert_eq!(keys().len(), 4);

    // Still 2 keys: the dry run deleted nothing.
    let stdout = retention(false);
    assert!(stdout.contains("deleted drill.old: 2 keys"), "{stdout}");
    assert!(stdout.contains("kept drill.new"), "{stdout}");
    assert_eq!(
        keys(),
        ["incident/drill.new/INC-3", "incident/live/INC-1"],
        "retention deleted the wrong keys"
    );
}

#[test]
fn token_issue_checks_role_jurisdiction_and_ttl_and_prints_a_token() {
    let temp = tempfile::tempdir().unwrap();
    let auth_dir = temp.path().join("auth");
    let dir = auth_dir.to_str().unwrap();
    let issue = |extra: &[&str]| {
        let mut args = vec!["token", "issue", "--auth-dir", dir, "--officer", "Li Wei"];
        args.extend_from_slice(extra);
        muster(&args)
    };
    // No key yet: say how to make one.
    let output = issue(&["--jurisdiction", "390102", "--role", "officer"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("muster token init"),
        "{}",
        text(&output.stderr)
    );
    verify_key(temp.path());
    for (args, expected) in [
        (
            &["--jurisdiction", "390102", "--role", "root"][..],
            "--role",
        ),
        (
            &["--jurisdiction", "123456", "--role", "officer"][..],
            "--jurisdiction \"123456\"",
        ),
        (
            &[
                "--jurisdiction",
                "390102",
                "--role",
                "officer",
                "--ttl",
                "12",
            ][..],
            "ttl",
        ),
    ] {
        let output = issue(args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            text(&output.stderr).contains(expected),
            "{expected} missing from {}",
            text(&output.stderr)
        );
    }
    let output = issue(&[
        "--jurisdiction",
        "390102",
        "--role",
        "officer",
        "--ttl",
        "8h",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let token = text(&output.stdout).trim().to_string();
    assert!(token.starts_with("mst1.") && !token.contains(char::is_whitespace));
    assert!(
        text(&output.stderr).contains("officer at"),
        "{}",
        text(&output.stderr)
    );
    let key = auth::load_verifying_key(&auth_dir.join("verify.pub")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let claims = key.verify(&token, now).unwrap();
    assert_eq!(
        (claims.officer.as_str(), claims.jurisdiction.as_str()),
        ("Li Wei", "390102")
    );
    assert_eq!(claims.expires_at_ms - claims.issued_at_ms, 8 * 3_600_000);
}
