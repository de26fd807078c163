//! The end-to-end test crate; the tests are in `tests/e2e.rs`, the harness in `tests/system/`.
