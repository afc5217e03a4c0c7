//! The spray ceiling: 10,000 failed logins over 10,000 accounts from 2,000 IPv6 /64s within a
//! minute (each source under its own limit of 5), through the trusted proxy's
//! `X-Forwarded-For`: past `[portal] spray_ceiling` (1,000 a minute by default) clients that
//! never signed in get 429, one `auth.spray_detected` is audited, and a known device (its
//! device cookie from an earlier login) still signs in. Real slapd, production limits.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::common::harness;
use crate::common::steps::step_async;
use crate::common::store_db::audit_of;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use harness::Harness;
use serde_json::json;

const ATTEMPTS: usize = 10_000;
const SOURCES: usize = 2_000;
const WORKERS: usize = 64;

/// Attempt `i`'s source: one address in /64 number `i % SOURCES` (documentation prefix; never
/// contacted, only named in the header).
fn source(i: usize) -> String {
    let n = i % SOURCES;
    format!("2001:db8:{:x}:{:x}::1", n / 256, n % 256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_past_the_ceiling_is_refused_but_known_devices_sign_in() {
    let h = Arc::new(Harness::start().await);
    let marie = step_async(
        "Marie signs in once: her browser is a known device",
        async {
            let marie = h.login("mdupont").await;
            marie
        },
    )
    .await;

    let statuses = step_async("10,000 failures over 10,000 accounts from 2,000 /64s", async {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (h, next) = (Arc::clone(&h), Arc::clone(&next));
            workers.push(tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ATTEMPTS {
                        return seen;
                    }
                    let r = c
                        .post(h.url("/api/v1/login"))
                        .header("x-forwarded-for", source(i))
                        .json(&json!({"username": format!("agent{i:05}"), "password": "Printemps2026!"}))
                        .send()
                        .await
                        .unwrap();
                    seen.push((i, r.status().as_u16()));
                }
            }));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        all.sort_unstable();
        eprintln!("10,000 attempts in {:?}", started.elapsed());
        all
    })
    .await;

    step_async("past the ceiling every unknown client gets 429", async {
        let refused = statuses.iter().filter(|(_, s)| *s == 429).count();
        let wrong = statuses.iter().filter(|(_, s)| *s == 401).count();
        assert_eq!(refused + wrong, ATTEMPTS, "only 401 and 429");
        // The ceiling (1,000) is crossed by the 1,001st failure; attempts in flight then
        // (at most one per worker) still finish as failures.
        assert!(
            (1_001..=1_001 + WORKERS).contains(&wrong),
            "{wrong} failures before the ceiling held"
        );
        assert!(statuses[ATTEMPTS - 1000..].iter().all(|(_, s)| *s == 429));
        // A stranger with a right password is refused too; it never signed in here.
        let r = reqwest::Client::new()
            .post(h.url("/api/v1/login"))
            .header("x-forwarded-for", "2001:db8:ffff::1")
            .json(&json!({"username": "fnoel", "password": common::slapd::password_of("fnoel")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
    })
    .await;

    step_async("one auth.spray_detected, counted in the metrics", async {
        let events = audit_of(&h.store, "auth.spray_detected").await;
        assert_eq!(events.len(), 1, "{events:?}");
        let m = h.metrics.render();
        assert!(m.contains("sesame_auth_spray_detected_total 1"), "{m}");
        assert!(m.contains("sesame_auth_spray_refused_total "), "{m}");
    })
    .await;

    step_async("Marie's known browser still signs in", async {
        let r = marie.login("mdupont").await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    })
    .await;
}
