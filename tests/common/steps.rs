//! Named steps of a journey: `step("the laptop enrols", || …)` runs one step, and a failure
//! inside it is reported as `step "the laptop enrols" failed: …`, so a long journey's failure
//! says which step broke (the original panic, with its file and line, is printed just before).

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::task::Poll;

/// Runs one step of a journey and returns what it returns.
#[track_caller]
pub fn step<T>(name: &str, f: impl FnOnce() -> T) -> T {
    started(name);
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => panic!("step \"{name}\" failed: {}", message(payload.as_ref())),
    }
}

/// The same for an async step: `step_async("…", async { … }).await`.
pub async fn step_async<T>(name: &str, fut: impl Future<Output = T>) -> T {
    started(name);
    let mut fut = pin!(fut);
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(v),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => panic!("step \"{name}\" failed: {}", message(payload.as_ref())),
        },
    )
    .await
}

/// Logged (shown with a failing test's output): where a journey that hangs had got to.
fn started(name: &str) {
    eprintln!("-- step: {name}");
}

fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a message)")
}
