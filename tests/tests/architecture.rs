//! Architecture invariants that can be checked mechanically (see ARCHITECTURE.md).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn manifest(krate: &str) -> String {
    std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml")).unwrap()
}

fn dependency_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies
            && let Some((name, _)) = line.split_once(['=', '.'])
            && !name.trim().is_empty()
            && !name.starts_with('#')
        {
            names.push(name.trim().to_string());
        }
    }
    names
}

/// Architecture Invariant: services reach sled only through `store` and NATS only through `bus`.
#[test]
fn services_reach_sled_and_nats_only_through_store_and_bus() {
    for service in ["intake", "escalation", "dispatch", "muster", "musterctl"] {
        let deps = dependency_names(&manifest(service));
        for forbidden in ["sled", "async-nats"] {
            assert!(
                !deps.iter().any(|d| d == forbidden),
                "crates/{service} depends on {forbidden} directly: go through store/bus"
            );
        }
    }
}

/// Architecture Invariant: only `proto` holds generated code (it alone runs a code generator).
#[test]
fn only_the_proto_crate_generates_code() {
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if name != "proto" {
            assert!(
                !dir.join("build.rs").exists(),
                "crates/{name} has a build script; generated code lives in crates/proto"
            );
        }
    }
}

/// Architecture Invariant: the domain crate does no I/O: no async runtime, storage or network.
#[test]
fn domain_has_no_io_dependencies() {
    let deps = dependency_names(&manifest("domain"));
    for forbidden in ["tokio", "sled", "async-nats", "tonic", "store", "bus"] {
        assert!(
            !deps.iter().any(|d| d == forbidden),
            "domain depends on {forbidden}"
        );
    }
}

/// House style: every Rust file starts with a `//!` line saying what it is for.
#[test]
fn every_module_says_what_it_is_for() {
    let mut missing = Vec::new();
    let mut stack = vec![root().join("crates"), root().join("tests")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if !text.trim_start().starts_with("//!") {
                    missing.push(path.strip_prefix(root()).unwrap().display().to_string());
                }
            }
        }
    }
    assert!(missing.is_empty(), "files without a //! line: {missing:?}");
}
