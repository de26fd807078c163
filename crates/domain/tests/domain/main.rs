//! The domain crate's one integration test binary: the core rules, dispatch, and escalation.

mod core;
mod dispatch;
mod escalation;
mod rulebook_boundaries;
