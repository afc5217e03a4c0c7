//! What a test needs from the machine, checked first thing: `require_root!("why")` skips the test
//! with a message when it does not run as root, unless `SESAME_TESTS_REQUIRE_ROOT=1` (CI), where
//! such a skip fails the test instead.

use std::io::Write as _;

/// Set to 1 by `.ci/run`: every test must really run, a skip is a failure.
pub const REQUIRE_ROOT_ENV: &str = "SESAME_TESTS_REQUIRE_ROOT";

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the calling test may go on: true as root; otherwise prints
/// `skipped: TEST needs root (WHY)` and returns false, or panics when
/// `SESAME_TESTS_REQUIRE_ROOT=1`.
pub fn root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let reason = format!("{test} needs root ({why})");
    assert!(
        std::env::var_os(REQUIRE_ROOT_ENV).is_none_or(|v| v != "1"),
        "{REQUIRE_ROOT_ENV}=1 and {reason}: run the tests as root"
    );
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
    false
}

/// First line of a test that needs root: returns from the test (skipped, with a message) when
/// not root, fails it instead under `SESAME_TESTS_REQUIRE_ROOT=1`.
#[macro_export]
macro_rules! require_root {
    ($why:expr) => {
        if !$crate::common::need::root($why) {
            return;
        }
    };
}
