//! CI smoke run: a real `muster up` (the debug binary `cargo test --workspace` builds, with its
//! own nats-server on a free port) and every muster-bench mode for about two seconds at a low
//! rate. Each must move load, make no errors, and fill its latency histogram.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// target/<profile>/muster, beside the directory holding this test binary (target/<profile>/deps).
fn muster_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let target_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let binary = target_dir.join("muster");
    assert!(
        binary.is_file(),
        "{} is missing: build it first with `cargo build -p muster` (or run `cargo test --workspace`, which builds it)",
        binary.display()
    );
    binary
}

struct Muster {
    child: Child,
    intake: String,
    feeds: String,
    pids: String,
}

impl Drop for Muster {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_muster(data: &Path) -> Muster {
    let mut child = Command::new(muster_binary())
        .args(["up", "--nats-port", "0"])
        .args(["--intake-addr", "127.0.0.1:0"])
        .args(["--escalation-addr", "127.0.0.1:0"])
        .args(["--dispatch-addr", "127.0.0.1:0"])
        .args(["--feeds-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .env_remove("MUSTER_NATS_URL")
        .env_remove("MUSTER_REGION_DIR")
        .env_remove("MUSTER_NAMESPACE")
        .env_remove("MUSTER_FEED_MAPPING")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start muster up");
    let mut printed = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("read muster up's output");
        let done = line.starts_with("Check it with");
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    let field = |prefix: &str| -> String {
        printed
            .iter()
            .find(|line| line.trim_start().starts_with(prefix))
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no {prefix} line in:\n{text}"))
            .to_string()
    };
    let intake = field("intake");
    let feeds_url = field("feeds");
    let feeds = feeds_url
        .split("/v1/")
        .next()
        .expect("feeds base")
        .to_string();
    let nats_pid = text
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no nats-server pid in:\n{text}"))
        .to_string();
    let pids = format!("{},{nats_pid}", child.id());
    Muster {
        child,
        intake,
        feeds,
        pids,
    }
}

fn bench(muster: &Muster, dir: &Path, mode: &str, extra: &[&str]) -> serde_json::Value {
    let json = dir.join(format!("{mode}.json"));
    let output = Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .arg(mode)
        .args(["--intake", &muster.intake, "--feeds", &muster.feeds])
        .args(["--pids", &muster.pids])
        .arg("--token-file")
        .arg(dir.join("muster").join("admin.token"))
        .args(["--concurrency", "4", "--drain", "10"])
        .args(extra)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run muster-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "muster-bench {mode} failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("read the JSON")).expect("JSON");
    assert_eq!(results["errors_total"], 0, "{mode}: errors\n{stdout}");
    assert!(
        results["requests_ok_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{mode}: no throughput\n{stdout}"
    );
    let processes = results["processes"].as_array().expect("processes");
    assert!(
        processes
            .iter()
            .any(|p| p["name"] == "muster" && p["rss_end_kb"].as_u64() > Some(0)),
        "{mode}: the muster process was not measured\n{stdout}"
    );
    results
}

#[test]
fn every_mode_runs_briefly_against_a_real_muster() {
    let data = tempfile::tempdir().expect("temp dir");
    let muster = start_muster(&data.path().join("muster"));
    let out = data.path();
    let short = ["--rate", "20", "--duration", "2"];

    let report = bench(&muster, out, "report", &short);
    assert!(
        report["e2e_latency_ms"]["samples"].as_u64() > Some(0),
        "{report:#}"
    );
    assert_eq!(report["incidents_not_responding_in_time"], 0, "{report:#}");

    let feeds = bench(&muster, out, "feeds", &short);
    assert!(
        feeds["feed_alerts_accepted"].as_u64() > Some(0),
        "{feeds:#}"
    );
    assert!(
        feeds["request_latency_ms"]["samples"].as_u64() > Some(0),
        "{feeds:#}"
    );

    let surge = bench(
        &muster,
        out,
        "surge",
        &["--count", "200", "--epicentres", "2", "--batch", "10"],
    );
    assert_eq!(surge["surge"]["complete"], true, "{surge:#}");
    // At least: an epicentre may join an incident the feeds run opened nearby.
    assert!(
        surge["surge"]["alerts_linked_counted"].as_u64() >= Some(200),
        "{surge:#}"
    );

    let mixed = bench(&muster, out, "mixed", &short);
    assert!(
        mixed["e2e_latency_ms"]["samples"].as_u64() > Some(0),
        "{mixed:#}"
    );
    assert!(
        mixed["requests_by_kind"]["update"].as_u64() > Some(0),
        "{mixed:#}"
    );
}
