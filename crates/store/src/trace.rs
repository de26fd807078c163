//! Trace context across services: W3C `traceparent` (`00-<trace id>-<parent span id>-<flags>`).
//!
//! A request or bus message that arrives with a `traceparent` continues that trace; one without
//! starts a new one. While a handler runs, its context is the task's current trace
//! ([`scope`] / [`sync_scope`]); every event a [`crate::Commit`] built in that scope adds to the
//! outbox records the context, and the relay publishes it as the NATS header `traceparent`. The
//! next service's consumer continues from there, so one trace id follows an incident report from
//! intake's gRPC call through escalation's grading to dispatch's bookings, and every log line in
//! the handlers' spans carries it.

use std::fmt;
use std::future::Future;

use ring::rand::{SecureRandom, SystemRandom};

/// One hop of a trace: the trace id and this hop's span id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits, never all zeros.
    pub trace_id: String,
    /// This hop's span: 16 lower-case hex digits, never all zeros.
    pub span_id: String,
    /// The span this one continues (the sender's), if any.
    pub parent_span_id: Option<String>,
    /// W3C trace flags (`01` sampled).
    pub flags: String,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    loop {
        if SystemRandom::new().fill(&mut buffer).is_err() {
            // No system randomness: fall back to the clock, traces stay distinguishable.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos());
            for (i, byte) in buffer.iter_mut().enumerate() {
                *byte = (nanos >> ((i % 16) * 8)) as u8 ^ i as u8;
            }
        }
        if buffer.iter().any(|b| *b != 0) {
            return buffer.iter().map(|b| format!("{b:02x}")).collect();
        }
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && text.bytes().any(|b| b != b'0')
}

/// A new span id: 16 lower-case hex digits, never all zeros.
pub fn new_span_id() -> String {
    random_hex(8)
}

impl TraceContext {
    /// A new trace (no parent).
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: random_hex(16),
            span_id: random_hex(8),
            parent_span_id: None,
            flags: "01".to_string(),
        }
    }

    /// Continues the trace in `traceparent` with a new span; `None` if it is not a valid version-00
    /// header (then the caller starts a new trace).
    pub fn continue_from(traceparent: &str) -> Option<TraceContext> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace_id, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || version != "00"
            || !is_hex(trace_id, 32)
            || !is_hex(parent, 16)
            || flags.len() != 2
            || !flags.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        Some(TraceContext {
            trace_id: trace_id.to_string(),
            span_id: random_hex(8),
            parent_span_id: Some(parent.to_string()),
            flags: flags.to_ascii_lowercase(),
        })
    }

    /// Continues `traceparent` when it is valid, otherwise starts a new trace.
    pub fn continue_or_new(traceparent: Option<&str>) -> TraceContext {
        traceparent
            .and_then(TraceContext::continue_from)
            .unwrap_or_else(TraceContext::new_root)
    }

    /// The header a message sent from this hop carries: this hop's span is the next one's parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// The trace the current task is handling, if it runs inside [`scope`] or [`sync_scope`].
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `future` with `context` as the current trace.
pub async fn scope<F: Future>(context: TraceContext, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

/// Runs `f` with `context` as the current trace.
pub fn sync_scope<R>(context: TraceContext, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(context, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let next = TraceContext::continue_from(header).unwrap();
        assert_eq!(next.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(next.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(next.span_id, "00f067aa0ba902b7");
        assert!(is_hex(&next.span_id, 16));
        assert_eq!(
            next.traceparent(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", next.span_id)
        );
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceContext::continue_from(bad).is_none(), "{bad}");
        }
        let fresh = TraceContext::continue_or_new(Some("garbage"));
        assert!(fresh.parent_span_id.is_none() && is_hex(&fresh.trace_id, 32));
        assert_ne!(TraceContext::new_root().trace_id, fresh.trace_id);
    }

    #[test]
    fn the_scope_is_the_current_trace_and_nothing_outside_it() {
        assert!(current().is_none());
        let context = TraceContext::new_root();
        let seen = sync_scope(context.clone(), current);
        assert_eq!(seen, Some(context));
        assert!(current().is_none());
    }
}
