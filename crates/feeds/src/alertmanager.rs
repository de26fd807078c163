//! Stub: being written.
use crate::{Alert, Limits, RejectCode, Rejection};

pub fn parse(_body: &[u8], _limits: &Limits) -> Result<Vec<Alert>, Rejection> {
    Err(Rejection::new(RejectCode::Unsupported, "not yet"))
}
