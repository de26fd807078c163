//! `muster serve <service>`: one service in its own process, against an existing NATS server.

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::service::{self, Settings};

pub async fn run(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let service = args.service;
    let region = crate::region::load(args.common.region_dir.as_deref())?;
    let partitions = service::partitions(service, &args.partitions, &region)?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(".muster").join(service.name()));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let addr = args.listen.unwrap_or(service.default_addr());
    let listener = service::bind(service, addr, "--listen").await?;
    let bound = listener
        .local_addr()
        .context("reading the bound gRPC address")?;
    tracing::info!(
        service = service.name(),
        grpc = %service::client_url(bound),
        nats = %bus::redact_password(&args.nats_url),
        data_dir = %data_dir.display(),
        namespace = %args.common.namespace,
        partitions = %if partitions.is_empty() { "all".to_string() } else { partitions.join(",") },
        "starting"
    );
    let mapping = service::load_mapping(args.common.feed_mapping.as_deref(), &region)?;
    let escalation_policy = service::load_escalation_policy(
        args.common.escalation_policy.as_deref(),
        args.common.escalation_minute_ms,
    )?;
    let feeds_listener = if service == service::Service::Intake {
        let addr = args.feeds_listen.unwrap_or(service::FEEDS_DEFAULT_ADDR);
        let listener = service::bind_feeds(addr, "--feeds-listen").await?;
        let bound = listener
            .local_addr()
            .context("reading the bound feed address")?;
        tracing::info!(feeds = %format!("http://{bound}/v1/feeds/<format>"), "feed listener bound");
        Some(listener)
    } else {
        None
    };
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let listener = service::bind_metrics(addr, "--metrics-listen").await?;
            let bound = listener
                .local_addr()
                .context("reading the bound metrics address")?;
            tracing::info!(metrics = %format!("{}/metrics", service::client_url(bound)), "metrics listener bound");
            let registry = lifecycle::metrics::Registry::new();
            service::spawn_metrics(listener, registry.clone(), shutdown.clone());
            Some(registry)
        }
        None => None,
    };
    let verifier = auth::load_verifying_key(&args.verify_key).map_err(|error| {
        anyhow::anyhow!(
            "--verify-key {error} (the verify.pub that `muster token init --auth-dir DIR` writes)"
        )
    })?;
    let (security, feed_secrets) = service::load_security(&args.common, verifier)?;
    let store_dir = data_dir.clone();
    let settings = Settings {
        nats_url: args.nats_url,
        data_dir,
        namespace: args.common.namespace,
        partitions,
        region,
        mapping,
        notify_webhook_url: args.common.notify_webhook,
        notify_drill_webhook_url: args.common.notify_drill_webhook,
        escalation_policy,
        dispatch_ack_timeout_ms: args.common.dispatch_ack_timeout_ms,
        metrics,
        security,
        feed_secrets,
    };
    service::run(service, settings, listener, feeds_listener, shutdown).await?;
    tracing::info!(service = service.name(), "stopped");
    service::checkpoint_store(service, store_dir).await;
    Ok(())
}
