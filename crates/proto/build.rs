//! Generates the muster.v1 types and gRPC stubs with the vendored protoc, so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of set_var: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "events",
        "notify",
        "intake",
        "escalation",
        "dispatch",
        "audit",
    ]
    .map(|name| root.join(format!("muster/v1/{name}.proto")));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("muster_v1_descriptor.bin"))
        .compile_protos(&files, std::slice::from_ref(&root))?;
    // The directory too, so a proto file added to the list is noticed by every cached build.
    println!("cargo:rerun-if-changed=build.rs");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("muster/v1").display()
    );
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    // The OTLP trace messages and the TraceService the exporter calls (lifecycle's `otlp`
    // feature): a subset of opentelemetry-proto, kept apart from muster.v1 (not in its
    // descriptor set, not under buf's lint).
    let otlp_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("otlp");
    let otlp_files = [
        "common/v1/common",
        "resource/v1/resource",
        "trace/v1/trace",
        "collector/trace/v1/trace_service",
    ]
    .map(|name| otlp_root.join(format!("opentelemetry/proto/{name}.proto")));
    tonic_prost_build::configure().compile_protos(&otlp_files, std::slice::from_ref(&otlp_root))?;
    println!("cargo:rerun-if-changed={}", otlp_root.display());
    for file in &otlp_files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Ok(())
}
