//! Escalation: acknowledgement chains, unified command on regrade and takeover, and statutory
//! reporting obligations, as a pure sans-IO state machine driven by a policy loaded from TOML.
//!
//! [`EscalationPolicy`] is the data (`data/region/escalation.toml`, embedded as the default);
//! [`EscalationMachine`] is one incident's machine. The host feeds it inputs through `handle_*`
//! with the current time, arms and disarms the timers it asks for through `poll_timers` and
//! `poll_cancelled_timers`, and publishes what `poll_events` returns.

mod machine;
mod policy;

pub use machine::{
    Closure, EscalationEvent, EscalationMachine, EscalationReason, GradedInput, Handled, Ignored,
    LeadChangeReason, Obligation, ObligationId, ObligationStatus, ReportKind, Rung, TimerArm,
    TimerId, TimerPurpose,
};
pub use policy::{
    EMBEDDED_DEFAULT_TOML, EscalationPolicy, FollowUpSchedule, GradeMinutes, Hop, ObligationRule,
    ReportTier, Step,
};
