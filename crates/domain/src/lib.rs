//! Muster's domain model: incident classes and grades, the jurisdiction tree, grading rules as data,
//! the sample region and the first dispatch recommendation. Pure: no async, no I/O, no clock reads.
//!
//! Everything that differs between provinces (grading thresholds, jurisdictions, units, response
//! plans) is loaded from TOML data, so the code here holds only the mechanics. Time never appears
//! here; callers that need "now" pass it in.

pub mod class;
pub mod dispatch;
pub mod error;
pub mod escalation;
pub mod event;
pub mod geo;
pub mod grade;
pub mod grading;
pub mod jurisdiction;
pub mod mutual_aid;
pub mod notification;
pub mod region;
pub mod replay;
pub mod roster;
pub mod rulebook;
pub mod time;
pub mod unit;

pub mod source;

pub use error::Error;
