//! OTLP trace export (feature `otlp`): a `tracing` layer that turns every span belonging to a
//! Muster trace into an OpenTelemetry span and sends them in batches to an OTLP/gRPC receiver
//! (`TraceService/Export`: the OpenTelemetry Collector, Jaeger, Tempo, ...).
//!
//! Muster's spans already carry W3C trace context as fields (`trace_id`, `span_id`,
//! `parent_span_id`: the access layer's `grpc` span, the consumers' `handle` spans), so the
//! exported spans have the same ids that travel in `traceparent` headers, and one trace shows
//! the officer's call, escalation's grading and dispatch's booking together. A span without
//! those fields belongs to the nearest enclosing span that has them (a new span id, that span as
//! parent); spans outside any trace (start-up, the exporter's own gRPC calls) are not exported.
//!
//! Export never holds up the service: closed spans go to a bounded queue (spans beyond it are
//! dropped and counted), and a thread of its own sends a batch every second or every 512 spans.
//! An unreachable receiver costs a warning every 30 s, not a retry storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use muster_proto::opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
use muster_proto::opentelemetry::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use muster_proto::opentelemetry::proto::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value,
};
use muster_proto::opentelemetry::proto::resource::v1::Resource;
use muster_proto::opentelemetry::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use tokio::sync::{mpsc, oneshot};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, warn};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Spans waiting for export; more are dropped (and counted) rather than slow the service.
const QUEUE_SPANS: usize = 8192;
/// Spans per `Export` call.
const BATCH_SPANS: usize = 512;
/// How long a span waits at most for its batch.
const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long one `Export` call may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one warning about a failing receiver this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Where to send spans and as which service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The receiver's gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// The resource attribute `service.name`: `muster-intake`, or `muster` for `muster up`.
    pub service_name: String,
}

impl OtlpConfig {
    /// Checks the endpoint: an `http://` or `https://` URL with a host.
    pub fn validate(&self) -> Result<(), String> {
        let rest = self
            .endpoint
            .strip_prefix("http://")
            .or_else(|| self.endpoint.strip_prefix("https://"))
            .ok_or_else(|| {
                format!(
                    "OTLP endpoint {:?}: use http://host:port (OTLP/gRPC, usually port 4317)",
                    self.endpoint
                )
            })?;
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') {
            return Err(format!("OTLP endpoint {:?} names no host", self.endpoint));
        }
        http::Uri::try_from(self.endpoint.as_str())
            .map_err(|e| format!("OTLP endpoint {:?}: {e}", self.endpoint))?;
        Ok(())
    }
}

/// Counters of the exporter, for tests and logs.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Spans a receiver accepted.
    pub exported: AtomicU64,
    /// Spans dropped: the queue was full, or the receiver failed.
    pub dropped: AtomicU64,
}

enum Command {
    Span(Box<Span>),
    Flush(oneshot::Sender<()>),
}

/// The exporter's handle: flush before the process exits.
#[derive(Clone)]
pub struct OtlpHandle {
    queue: mpsc::Sender<Command>,
    pub stats: Arc<OtlpStats>,
}

impl OtlpHandle {
    /// Sends every span closed so far; waits at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.queue.try_send(Command::Flush(done)).is_ok() {
            let deadline = Instant::now() + timeout;
            let mut wait = wait;
            while Instant::now() < deadline {
                match wait.try_recv() {
                    Ok(()) | Err(oneshot::error::TryRecvError::Closed) => return,
                    Err(oneshot::error::TryRecvError::Empty) => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                }
            }
        }
    }
}

/// The layer; [`layer`] builds it with its exporter thread.
pub struct OtlpLayer {
    queue: mpsc::Sender<Command>,
    stats: Arc<OtlpStats>,
}

/// Starts the exporter thread and returns the layer to add to the subscriber, with its handle.
pub fn layer(config: OtlpConfig) -> Result<(OtlpLayer, OtlpHandle), String> {
    config.validate()?;
    let (queue, receiver) = mpsc::channel(QUEUE_SPANS);
    let stats = Arc::new(OtlpStats::default());
    let thread_stats = stats.clone();
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("OTLP export disabled: no runtime for it: {error}");
                    return;
                }
            };
            runtime.block_on(export_loop(config, receiver, thread_stats));
        })
        .map_err(|e| format!("cannot start the OTLP export thread: {e}"))?;
    Ok((
        OtlpLayer {
            queue: queue.clone(),
            stats: stats.clone(),
        },
        OtlpHandle { queue, stats },
    ))
}

async fn export_loop(
    config: OtlpConfig,
    mut receiver: mpsc::Receiver<Command>,
    stats: Arc<OtlpStats>,
) {
    let resource = Resource {
        attributes: vec![
            key_value("service.name", string_value(&config.service_name)),
            key_value("service.namespace", string_value("muster")),
            key_value("service.version", string_value(env!("CARGO_PKG_VERSION"))),
        ],
        dropped_attributes_count: 0,
    };
    let mut client: Option<TraceServiceClient<tonic::transport::Channel>> = None;
    let mut last_warning: Option<Instant> = None;
    let mut batch: Vec<Span> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let deadline = tokio::time::sleep(BATCH_INTERVAL);
        tokio::pin!(deadline);
        let mut closed = false;
        // Gather until the batch is full, the interval passes, or someone asks for a flush.
        loop {
            tokio::select! {
                command = receiver.recv() => match command {
                    Some(Command::Span(span)) => {
                        batch.push(*span);
                        if batch.len() >= BATCH_SPANS {
                            break;
                        }
                    }
                    Some(Command::Flush(done)) => {
                        waiting.push(done);
                        break;
                    }
                    None => {
                        closed = true;
                        break;
                    }
                },
                _ = &mut deadline => break,
            }
        }
        if !batch.is_empty() {
            let spans = std::mem::take(&mut batch);
            let count = spans.len() as u64;
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "muster".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            attributes: Vec::new(),
                            dropped_attributes_count: 0,
                        }),
                        spans,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            match send(&config.endpoint, &mut client, request).await {
                Ok(()) => {
                    stats.exported.fetch_add(count, Ordering::Relaxed);
                }
                Err(error) => {
                    stats.dropped.fetch_add(count, Ordering::Relaxed);
                    client = None;
                    if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        last_warning = Some(Instant::now());
                        warn!(
                            endpoint = %config.endpoint,
                            %error,
                            spans = count,
                            "OTLP export failed; these spans are dropped (next warning in 30 s at the earliest)"
                        );
                    }
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

async fn send(
    endpoint: &str,
    client: &mut Option<TraceServiceClient<tonic::transport::Channel>>,
    request: ExportTraceServiceRequest,
) -> Result<(), String> {
    if client.is_none() {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| e.to_string())?
            .connect_timeout(EXPORT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        *client = Some(TraceServiceClient::new(channel));
    }
    let answer = client
        .as_mut()
        .expect("connected above")
        .export(request)
        .await
        .map_err(|status| format!("{}: {}", status.code(), status.message()))?
        .into_inner();
    match answer.partial_success {
        Some(partial) if partial.rejected_spans > 0 => Err(format!(
            "the receiver rejected {} spans: {}",
            partial.rejected_spans, partial.error_message
        )),
        _ => Ok(()),
    }
}

fn string_value(text: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(text.to_string())),
    }
}

fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
    }
}

/// `len / 2` bytes from lower-case hex, or `None`.
fn from_hex(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.len() != len * 2 {
        return None;
    }
    (0..len)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn random_span_id() -> Vec<u8> {
    from_hex(&store::trace::new_span_id(), 8).unwrap_or_else(|| vec![1; 8])
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A span being recorded, kept in the span's extensions until it closes.
struct Recording {
    trace_id: Option<Vec<u8>>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: &'static str,
    start_unix_nanos: u64,
    attributes: Vec<KeyValue>,
}

/// Collects a span's fields: the trace context ones apart, the rest as attributes.
#[derive(Default)]
struct Fields {
    trace_id: Option<Vec<u8>>,
    span_id: Option<Vec<u8>>,
    parent_span_id: Option<Vec<u8>>,
    attributes: Vec<KeyValue>,
}

impl Fields {
    fn text(&mut self, field: &Field, value: String) {
        match field.name() {
            "trace_id" => self.trace_id = from_hex(&value, 16),
            "span_id" => self.span_id = from_hex(&value, 8),
            "parent_span_id" => self.parent_span_id = from_hex(&value, 8),
            name => self.attributes.push(key_value(
                name,
                AnyValue {
                    value: Some(any_value::Value::StringValue(value)),
                },
            )),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(key_value(
            field.name(),
            AnyValue {
                value: Some(any_value::Value::IntValue(value)),
            },
        ));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_i64(field, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attributes.push(key_value(
            field.name(),
            AnyValue {
                value: Some(any_value::Value::BoolValue(value)),
            },
        ));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attributes.push(key_value(
            field.name(),
            AnyValue {
                value: Some(any_value::Value::DoubleValue(value)),
            },
        ));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text(field, format!("{value:?}"));
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        // The enclosing span's trace, for spans that carry no context of their own.
        let enclosing = span.parent().and_then(|parent| {
            parent
                .extensions()
                .get::<Recording>()
                .and_then(|r| r.trace_id.clone().map(|t| (t, r.span_id.clone())))
        });
        let (trace_id, span_id, parent_span_id) = match (fields.trace_id.take(), enclosing) {
            // A hop of a Muster trace: its own ids; its parent is the sender's span.
            (Some(trace_id), _) => (
                Some(trace_id),
                fields.span_id.take().unwrap_or_else(random_span_id),
                fields.parent_span_id.take().unwrap_or_default(),
            ),
            (None, Some((trace_id, parent))) => (Some(trace_id), random_span_id(), parent),
            (None, None) => (None, random_span_id(), Vec::new()),
        };
        span.extensions_mut().insert(Recording {
            trace_id,
            span_id,
            parent_span_id,
            name: attrs.metadata().name(),
            start_unix_nanos: now_unix_nanos(),
            attributes: fields.attributes,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(recording) = span.extensions_mut().get_mut::<Recording>() {
            recording.attributes.extend(fields.attributes);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(recording) = span.extensions_mut().remove::<Recording>() else {
            return;
        };
        let Some(trace_id) = recording.trace_id else {
            return;
        };
        let kind = match recording.name {
            "grpc" => span::SpanKind::Server,
            "handle" => span::SpanKind::Consumer,
            _ => span::SpanKind::Internal,
        };
        let exported = Span {
            trace_id,
            span_id: recording.span_id,
            trace_state: String::new(),
            parent_span_id: recording.parent_span_id,
            flags: 0,
            name: recording.name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: recording.start_unix_nanos,
            end_time_unix_nano: now_unix_nanos(),
            attributes: recording.attributes,
            dropped_attributes_count: 0,
            dropped_events_count: 0,
            dropped_links_count: 0,
            status: None,
        };
        if self
            .queue
            .try_send(Command::Span(Box::new(exported)))
            .is_err()
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use muster_proto::opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse;
    use muster_proto::opentelemetry::proto::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// An OTLP receiver on a real socket that keeps what it is sent.
    #[derive(Clone, Default)]
    struct Receiver {
        got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            self.got.lock().unwrap().push(request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    fn start_receiver(runtime: &tokio::runtime::Runtime) -> (Receiver, String) {
        let receiver = Receiver::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(receiver.clone());
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (receiver, format!("http://{addr}"))
    }

    fn text(span: &Span, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    }

    #[test]
    fn spans_of_a_trace_reach_the_receiver_with_their_w3c_ids_and_parents() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (receiver, endpoint) = start_receiver(&runtime);
        let (layer, handle) = super::layer(OtlpConfig {
            endpoint,
            service_name: "muster-test".into(),
        })
        .unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        tracing::subscriber::with_default(subscriber, || {
            let hop = tracing::info_span!(
                "grpc",
                method = "/muster.v1.IntakeService/ReportIncident",
                trace_id = trace_id,
                span_id = "00f067aa0ba902b7",
                parent_span_id = "b7ad6b7169203331",
            );
            hop.in_scope(|| {
                let inner = tracing::info_span!("commit", incident_id = "INC-1", events = 2u64);
                inner.in_scope(|| {});
            });
            drop(hop);
            // Outside any trace: not exported.
            tracing::info_span!("startup").in_scope(|| {});
        });
        handle.flush(Duration::from_secs(5));
        let got = receiver.got.lock().unwrap().clone();
        let spans: Vec<&Span> = got
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert_eq!(spans.len(), 2, "{got:?}");
        let resource = got[0].resource_spans[0].resource.as_ref().unwrap();
        assert!(
            resource.attributes.iter().any(|kv| kv.key == "service.name"
                && kv.value
                    == Some(AnyValue {
                        value: Some(any_value::Value::StringValue("muster-test".into()))
                    })),
            "{resource:?}"
        );
        let hop = spans.iter().find(|s| s.name == "grpc").unwrap();
        let inner = spans.iter().find(|s| s.name == "commit").unwrap();
        assert_eq!(hop.trace_id, from_hex(trace_id, 16).unwrap());
        assert_eq!(hop.span_id, from_hex("00f067aa0ba902b7", 8).unwrap());
        assert_eq!(hop.parent_span_id, from_hex("b7ad6b7169203331", 8).unwrap());
        assert_eq!(hop.kind, span::SpanKind::Server as i32);
        assert_eq!(
            text(hop, "method").as_deref(),
            Some("/muster.v1.IntakeService/ReportIncident")
        );
        // The ids are the span's identity, not attributes.
        assert_eq!(text(hop, "trace_id"), None);
        assert_eq!(inner.trace_id, hop.trace_id);
        assert_eq!(inner.parent_span_id, hop.span_id);
        assert_eq!(inner.span_id.len(), 8);
        assert_ne!(inner.span_id, hop.span_id);
        assert_eq!(inner.kind, span::SpanKind::Internal as i32);
        assert_eq!(text(inner, "incident_id").as_deref(), Some("INC-1"));
        assert!(hop.start_time_unix_nano <= inner.start_time_unix_nano);
        assert!(inner.end_time_unix_nano <= hop.end_time_unix_nano);
        assert_eq!(handle.stats.exported.load(Ordering::Relaxed), 2);
        assert_eq!(handle.stats.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_unreachable_receiver_drops_and_counts_and_a_bad_endpoint_is_named() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (layer, handle) = super::layer(OtlpConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
            service_name: "muster-test".into(),
        })
        .unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("handle", trace_id = "4bf92f3577b34da6a3ce929d0e0e4736")
                .in_scope(|| {});
        });
        handle.flush(Duration::from_secs(10));
        assert_eq!(handle.stats.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(handle.stats.exported.load(Ordering::Relaxed), 0);

        for (endpoint, says) in [
            ("127.0.0.1:4317", "use http://host:port"),
            ("grpc://collector:4317", "use http://host:port"),
            ("http://", "names no host"),
            ("http://:4317", "names no host"),
        ] {
            let problem = OtlpConfig {
                endpoint: endpoint.into(),
                service_name: "x".into(),
            }
            .validate()
            .unwrap_err();
            assert!(problem.contains(says), "{endpoint}: {problem}");
        }
    }
}
