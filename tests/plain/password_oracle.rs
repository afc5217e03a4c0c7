//! No password oracle: a wrong password, an unknown user, a disabled account and the right
//! password of a user without access get the same answer (status, body, time) from
//! `POST /api/v1/login`, `POST /api/v1/enrol` and the web `POST /login`, and each counts as a
//! failure (limiter and metrics). Real slapd; each case comes from its own source address
//! through the trusted proxy's `X-Forwarded-For`.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::common::harness;
use crate::common::steps::step_async;

use std::time::{Duration, Instant};

use common::slapd::password_of;
use harness::{laptop_key, Harness};
use serde_json::json;
use sesame::service::ratelimit::FailureLimiter;

/// (case, username, password): rmoreau is disabled in the seed, pdurand (a teacher) has no role.
fn cases() -> [(&'static str, &'static str, &'static str); 4] {
    [
        ("wrong password", "mdupont", "Pas-Le-Bon-2026"),
        ("unknown user", "personne-inconnue", "Pas-Le-Bon-2026"),
        ("disabled account", "rmoreau", password_of("rmoreau")),
        (
            "no access, right password",
            "pdurand",
            password_of("pdurand"),
        ),
    ]
}

fn xff(i: usize) -> String {
    format!("198.18.{}.{}", 100 + i / 200, 1 + i % 200)
}

/// One attempt on `route` (`api-login`, `enrol`, `web-login`) from source `from`:
/// (status, body, time taken).
async fn attempt(
    h: &Harness,
    route: &str,
    user: &str,
    pass: &str,
    from: &str,
) -> (u16, String, Duration) {
    let c = reqwest::Client::new();
    let req = match route {
        "api-login" => c
            .post(h.url("/api/v1/login"))
            .json(&json!({"username": user, "password": pass})),
        "enrol" => c.post(h.url("/api/v1/enrol")).json(&json!({
            "code": "ABCD-EFGH-JKLM", "username": user, "password": pass,
            "public_key": laptop_key().0, "hostname": "pc-test",
        })),
        _ => c.post(h.url("/login")).header("origin", &h.base).form(&[
            ("username", user),
            ("password", pass),
            ("next", "/"),
        ]),
    };
    let t = Instant::now();
    let r = req.header("x-forwarded-for", from).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, body, t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn failures(h: &Harness, family: &str) -> u64 {
    let page = h.metrics.render();
    let line = format!("{family}_total{{outcome=\"failure\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_refusals_answer_alike_and_count() {
    let h = Harness::start_lenient().await;
    let mut source = 0;
    for route in ["api-login", "enrol", "web-login"] {
        step_async(&format!("{route}: one status and one body"), async {
            let mut answers = Vec::new();
            for (case, user, pass) in cases() {
                source += 1;
                let (status, body, _) = attempt(&h, route, user, pass, &xff(source)).await;
                assert_eq!(status, 401, "{route}, {case}: {body}");
                answers.push((case, body));
            }
            for (case, body) in &answers[1..] {
                assert_eq!(
                    body, &answers[0].1,
                    "{route}: {case} differs from a wrong password"
                );
            }
        })
        .await;
    }
    step_async("every refusal counts in the metrics", async {
        // 4 logins through the API and 4 through the web; 4 enrolments.
        assert_eq!(failures(&h, "sesame_logins"), 8);
        assert_eq!(failures(&h, "sesame_enrolments"), 4);
    })
    .await;

    step_async("medians over 50 tries within 20 % of each other", async {
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); 4];
        // Interleaved, so that a slow moment of the machine hits every case alike; a warm-up
        // round first (connections, the group cache of a successful bind).
        for round in 0..51 {
            for (i, (_, user, pass)) in cases().into_iter().enumerate() {
                source += 1;
                let (status, _, t) = attempt(&h, "api-login", user, pass, &xff(source)).await;
                assert_eq!(status, 401);
                if round > 0 {
                    times[i].push(t);
                }
            }
        }
        let medians: Vec<Duration> = times.into_iter().map(median).collect();
        let (lo, hi) = (medians.iter().min().unwrap(), medians.iter().max().unwrap());
        eprintln!("medians (wrong, unknown, disabled, no access): {medians:?}");
        assert!(
            hi.as_secs_f64() <= lo.as_secs_f64() * 1.2,
            "medians {medians:?} differ by more than 20 %"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_counts_with_the_limiter() {
    // Three failures per key and minute: the fourth attempt of each case is refused for its
    // rate, which only happens if the first three counted.
    let h = Harness::start_with(
        None,
        FailureLimiter::with_limits(3, Duration::from_secs(60)),
    )
    .await;
    for (i, (case, user, pass)) in cases().into_iter().enumerate() {
        let from = xff(i);
        for n in 0..3 {
            let (status, body, _) = attempt(&h, "api-login", user, pass, &from).await;
            assert_eq!(status, 401, "{case}, try {n}: {body}");
        }
        let (status, body, _) = attempt(&h, "api-login", user, pass, &from).await;
        assert_eq!(status, 429, "{case}: the refusals were not counted: {body}");
    }
}
