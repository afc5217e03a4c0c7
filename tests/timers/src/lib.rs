//! Shared harness of the timer conformance tests lives in tests/; this crate has no code.
