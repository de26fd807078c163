//! The `muster` binary from the outside: region checking, and `up` refusing busy ports with a
//! message that says what to do. None of these needs a nats-server.

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
        .output()
        .expect("run the muster binary")
}

fn repo_region_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/region")
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
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&busy_port), "port missing from: {stderr}");
    assert!(
        stderr.contains("--nats-port"),
        "hint missing from: {stderr}"
    );
}
