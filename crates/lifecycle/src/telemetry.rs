//! Tracing setup: human-readable logs by default, JSON lines with `--log-format json`, and with
//! the `otlp` feature the spans of every trace exported over OTLP ([`crate::otlp`]).

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// Installs the global subscriber; `RUST_LOG` overrides `default_filter`. Calling it twice is harmless.
pub fn init(format: LogFormat, default_filter: &str) {
    install(format, default_filter, Vec::new());
}

type Base = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;
type BoxedLayer = Box<dyn tracing_subscriber::Layer<Base> + Send + Sync>;

/// The filter, the log lines, and `extra` layers; false when a subscriber was already installed.
fn install(format: LogFormat, default_filter: &str, extra: Vec<BoxedLayer>) -> bool {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let lines: BoxedLayer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let mut layers = vec![lines];
    layers.extend(extra);
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .is_ok()
}

/// [`init`], and with `otlp` the spans of every trace exported over OTLP/gRPC as well
/// ([`crate::otlp`]). Returns the exporter's handle (flush it before exiting), or why the
/// endpoint is unusable.
#[cfg(feature = "otlp")]
pub fn init_with_otlp(
    format: LogFormat,
    default_filter: &str,
    otlp: Option<crate::otlp::OtlpConfig>,
) -> Result<Option<crate::otlp::OtlpHandle>, String> {
    use tracing_subscriber::Layer as _;
    let Some(config) = otlp else {
        init(format, default_filter);
        return Ok(None);
    };
    let (layer, handle) = crate::otlp::layer(config)?;
    install(format, default_filter, vec![layer.boxed()]);
    Ok(Some(handle))
}
