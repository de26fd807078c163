//! The event plumbing every service runs: its store, its bus connection, the outbox relay and its
//! consumers, started together and drained together.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Bus, Error, Handler};

/// A service's store, bus and background tasks.
pub struct Runtime {
    pub store: Store,
    pub bus: Bus,
    service: String,
    tasks: TaskTracker,
    background: CancellationToken,
    /// `(stream, durable name)` of every consumer started, for [`Runtime::lag_probe`].
    consumers: Arc<Mutex<Vec<(String, String)>>>,
}

/// Asks JetStream for the lag of a runtime's consumers (see [`Bus::consumer_lag`]); cheap to
/// clone, and it sees consumers started after it was taken.
#[derive(Clone)]
pub struct LagProbe {
    bus: Bus,
    consumers: Arc<Mutex<Vec<(String, String)>>>,
}

impl LagProbe {
    /// `(durable name, pending)` for each consumer JetStream answered about; one it could not
    /// ask (NATS down, consumer deleted) is logged at debug and left out.
    pub async fn lags(&self) -> Vec<(String, u64)> {
        let consumers = self
            .consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut lags = Vec::with_capacity(consumers.len());
        for (stream, durable) in consumers {
            match self.bus.consumer_lag(&stream, &durable).await {
                Ok(pending) => lags.push((durable, pending)),
                Err(error) => tracing::debug!(%error, durable, "consumer lag unavailable"),
            }
        }
        lags
    }
}

impl Runtime {
    /// Opens the store in `data_dir`, connects to NATS, makes sure the streams exist and starts the
    /// outbox relay.
    pub async fn start(service: &str, nats_url: &str, data_dir: &Path) -> Result<Runtime, Error> {
        // Each step's time is logged: a restart's time to serving is mostly these (issue 8, T5).
        let opening = std::time::Instant::now();
        let store = Store::open(data_dir)?;
        let store_ms = opening.elapsed().as_millis() as u64;
        let bus = Bus::connect(nats_url, service, Duration::from_secs(10)).await?;
        bus.ensure_streams().await?;
        tracing::info!(
            service,
            store_ms,
            bus_ms = opening.elapsed().as_millis() as u64 - store_ms,
            "store opened, bus connected"
        );
        let tasks = TaskTracker::new();
        // Background work has its own token: it stops after the gRPC server, so that requests
        // accepted during the drain still leave the outbox.
        let background = CancellationToken::new();
        tasks.spawn(crate::run_relay(
            store.clone(),
            bus.clone(),
            background.clone(),
        ));
        Ok(Runtime {
            store,
            bus,
            service: service.to_string(),
            tasks,
            background,
            consumers: Arc::default(),
        })
    }

    /// A probe of this runtime's consumers' lag, for the metrics endpoint.
    pub fn lag_probe(&self) -> LagProbe {
        LagProbe {
            bus: self.bus.clone(),
            consumers: self.consumers.clone(),
        }
    }

    fn track(&self, stream: &str, durable: &str) {
        self.consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((stream.to_string(), durable.to_string()));
    }

    /// Starts a durable consumer `<service>-<purpose>-<namespace>` over `filters`.
    pub async fn consume<H: Handler>(
        &self,
        purpose: &str,
        namespace: &str,
        filters: Vec<String>,
        handler: H,
    ) -> Result<(), Error> {
        let name = durable_name(&self.service, purpose, namespace);
        let consumer = self.bus.durable_consumer(&name, filters).await?;
        self.track(crate::EVENTS_STREAM, &name);
        self.tasks.spawn(crate::run_consumer_owned(
            name,
            self.bus.clone(),
            consumer,
            self.store.clone(),
            handler,
            self.background.clone(),
        ));
        Ok(())
    }

    /// Starts a durable work consumer `<service>-<purpose>-<namespace>` over `filters`: one
    /// message at a time, each done (commit, flush, ack) or put off (commit, flush, nak with a
    /// delay). For work with effects outside the store, such as a webhook call.
    pub async fn consume_work<H: crate::WorkHandler>(
        &self,
        purpose: &str,
        namespace: &str,
        filters: Vec<String>,
        handler: H,
    ) -> Result<(), Error> {
        let name = durable_name(&self.service, purpose, namespace);
        let consumer = self.bus.durable_consumer(&name, filters).await?;
        self.track(crate::EVENTS_STREAM, &name);
        self.tasks.spawn(crate::work::run_work_consumer(
            name,
            self.bus.clone(),
            consumer,
            self.store.clone(),
            handler,
            self.background.clone(),
        ));
        Ok(())
    }

    /// Starts the durable feed consumer `<service>-feeds` on the feeds stream (created if needed).
    pub async fn consume_feeds<H: crate::FeedHandler>(&self, handler: H) -> Result<(), Error> {
        self.bus.ensure_feed_stream().await?;
        let name = format!("{}-feeds", self.service);
        let consumer = self.bus.feed_consumer(&name).await?;
        self.track(crate::feed::FEEDS_STREAM, &name);
        self.tasks.spawn(crate::feed::run_feed_consumer(
            name,
            self.bus.clone(),
            consumer,
            handler,
            self.background.clone(),
        ));
        Ok(())
    }

    /// A task that stops with the background work (before the final drain of the outbox).
    pub fn spawn_background<F>(&self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.background.clone()));
    }

    /// Cancels `stop` (the service's shutdown) when the store fails to write
    /// ([`store::Store::failed`]): in this process it can never again make a write durable, so
    /// the service stops, [`Runtime::drain`] returns the failure, the process exits non-zero,
    /// and its supervisor (systemd, Kubernetes, the fault suite's watchdog) starts it again,
    /// which serves once the disk has room.
    pub fn stop_on_store_failure(&self, stop: CancellationToken) {
        let store = self.store.clone();
        let service = self.service.clone();
        tokio::spawn(async move {
            tokio::select! {
                failure = store.failed() => {
                    tracing::error!(service, %failure, "stopping");
                    stop.cancel();
                }
                _ = stop.cancelled() => {}
            }
        });
    }

    /// Stops the consumers after their current group, drains the outbox, flushes the store.
    /// A store that failed to write ([`Runtime::stop_on_store_failure`]) is the error.
    pub async fn drain(self) -> Result<(), Error> {
        self.background.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Some(reason) = self.store.failure() {
            self.bus.flush().await;
            return Err(store::Error::Failed { reason }.into());
        }
        self.store.flush().await?;
        self.bus.flush().await;
        tracing::info!(service = %self.service, "drained");
        Ok(())
    }
}

/// `<service>-<purpose>-<namespace>`, the name of a service's durable consumer. Durable names
/// cannot contain dots; drill namespaces do, so they become underscores.
pub(crate) fn durable_name(service: &str, purpose: &str, namespace: &str) -> String {
    format!("{service}-{purpose}-{}", namespace.replace('.', "_"))
}
