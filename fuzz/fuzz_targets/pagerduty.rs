//! Fuzzes the pagerduty feed parser: any input must end in alerts or a rejection, never a panic,
//! a hang or unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = feeds::parse(feeds::Format::Pagerduty, data, &feeds::Limits::default());
});
