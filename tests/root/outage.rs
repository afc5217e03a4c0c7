//! A long outage of the database and the directory costs the tunnels nothing: two worlds run side
//! by side (`sesame serve` on its own PostgreSQL, slapd, a wireguard-go laptop, an iperf3 server
//! on the payroll host), each under a steady ping and a rate-limited UDP stream through the
//! tunnel; in world A PostgreSQL and slapd are stopped for the whole window while the sync keeps
//! trying, in world B both stay up. A may lose no more than B (plus the noise tolerance below),
//! and recovers once they are back. `SESAME_OUTAGE_SECS` sets the window (default 600 s, the
//! issue's 10 minutes). Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::require_root;

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::metrics;
use common::netns::wait_for;
use common::serve::{
    api, audit_verify, enrol, login, Builder, World, APP_PORT, METRICS, PAIE, ROLES,
};
use common::slapd::password_of;
use common::traffic::{PingCount, SteadyPing, UdpCount, UdpStream};
use serde_json::json;

/// iperf3's port on the payroll host (granted for TCP control and UDP data).
const IPERF_PORT: u16 = 5201;
/// The UDP stream's rate: about 1,000 datagrams/s, modest for the debug build on 2 shared cores.
const UDP_RATE: &str = "10M";
/// Ping interval (seconds): 5 echo requests a second.
const PING_INTERVAL: &str = "0.2";
const PINGS_PER_SEC: u64 = 5;

/// What one world's traffic lost during the window.
#[derive(Debug)]
struct Loss {
    ping: PingCount,
    udp: UdpCount,
}

/// The window's length: `SESAME_OUTAGE_SECS`, 600 by default.
fn window() -> u64 {
    std::env::var("SESAME_OUTAGE_SECS")
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|e| panic!("SESAME_OUTAGE_SECS={s:?}: {e}"))
        })
        .unwrap_or(600)
}

/// One metric's value from the metrics listener, summed over its labels (0 when absent).
fn metric(name: &str) -> f64 {
    metrics::total(&metrics::scrape(METRICS), name)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A world on its own PostgreSQL whose payroll resource also grants iperf3's port; Marie's
/// laptop enrolled and its tunnel up; iperf3 listening on the payroll host.
fn world(prefix: &str) -> (World, common::netns::Proc) {
    let sections = format!(
        r#"{ROLES}
[[resource]]
name = "paie"
allow = ["{PAIE}/32 tcp:{APP_PORT},{IPERF_PORT}", "{PAIE}/32 udp:{IPERF_PORT}", "{PAIE}/32 icmp"]

[[grant]]
group = "cn=gestionnaires-paie,ou=groups,dc=academie,dc=test"
resources = ["paie"]
"#
    );
    let w = Builder::new(prefix)
        .laptops(1)
        .postgres()
        .sections(&sections)
        .build();
    let log = w.dir.path().join("iperf3.log");
    let iperf = w.res.spawn(
        "iperf3",
        &[
            "-s",
            "-B",
            PAIE,
            "-p",
            &IPERF_PORT.to_string(),
            "--forceflush",
        ],
        Some(&log),
    );
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Server listening")),
        "iperf3 server did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let jar = w.dir.path().join("it.cookies");
    login(&jar, "tleroux");
    enrol(&jar, "mdupont", "portable-marie", &w.wg().key.public);
    w.laptop_tunnel_up();
    (w, iperf)
}

/// Builds a world, reports it ready on `ready`, waits for `go`, runs the window (with the outage
/// when `outage`), checks the recovery; what the traffic lost.
fn run(prefix: &str, outage: bool, ready: mpsc::Sender<()>, go: mpsc::Receiver<()>) -> Loss {
    let (mut w, _iperf) = world(prefix);
    ready.send(()).unwrap();
    // Dropped now: if the other world dies before it is ready, the test stops waiting at once.
    drop(ready);
    go.recv_timeout(Duration::from_secs(300))
        .expect("the other world never got ready");
    let secs = window();
    let name = if outage { "A (outage)" } else { "B (both up)" };
    let ping = SteadyPing::start(
        w.laptop(),
        PAIE,
        (secs * PINGS_PER_SEC) as u32,
        PING_INTERVAL,
    );
    let udp = UdpStream::start(w.laptop(), PAIE, IPERF_PORT, secs, UDP_RATE);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let errors_before = metric("sesame_directory_sync_errors_total");
    if outage {
        // Real stops: every PostgreSQL process quits at once, slapd exits.
        w.pg.as_ref().unwrap().stop();
        w.slapd.stop();
        assert!(
            wait_for(Duration::from_secs(10), || !w.ready()),
            "readyz still 200 with PostgreSQL stopped; log:\n{}",
            w.log_text()
        );
        eprintln!(
            "{name}: PostgreSQL and slapd stopped {:?} into the window",
            started.elapsed()
        );
    }
    let ping = ping.finish();
    let udp = udp.finish();
    eprintln!(
        "{name}: window of {secs} s over after {:?}; ping {ping:?}, UDP {udp:?}",
        started.elapsed()
    );
    let errors = metric("sesame_directory_sync_errors_total") - errors_before;
    if outage {
        // The sync tried and failed; then, unable to renew the jobs lease with the database
        // down, this portal gave the singleton jobs up (control::leader): it takes them back
        // when the database answers, and the sync then succeeds (checked below).
        assert!(
            errors >= 1.0,
            "{errors} failed sync passes during the outage (want 1); log:\n{}",
            w.log_text()
        );
        assert!(
            w.log_text()
                .contains("this portal no longer runs the singleton jobs"),
            "the leader kept the jobs with the database down; log:\n{}",
            w.log_text()
        );
        assert!(!w.ready());
        let back = now_secs();
        w.pg.as_ref().unwrap().start_again();
        w.slapd.start_again();
        let t = Instant::now();
        assert!(
            wait_for(Duration::from_secs(60), || w.ready()),
            "readyz not 200 within 60 s of PostgreSQL's return; log:\n{}",
            w.log_text()
        );
        let ready_after = t.elapsed();
        assert!(
            wait_for(Duration::from_secs(60), || metric(
                "sesame_directory_sync_last_success_timestamp_seconds"
            ) > back),
            "no successful sync pass within 60 s of the return; log:\n{}",
            w.log_text()
        );
        eprintln!(
            "{name}: {errors} failed sync passes during the outage; back: readyz after \
             {ready_after:?}, a sync pass succeeded after {:?}",
            t.elapsed()
        );
        // Logins work again (the directory answers).
        let (st, _) = api(
            "POST",
            "/api/v1/login",
            Some(&json!({"username": "mdupont", "password": password_of("mdupont")})),
            None,
            None,
        );
        assert_eq!(st, 200);
    } else {
        assert_eq!(
            errors,
            0.0,
            "sync failures with both up; log:\n{}",
            w.log_text()
        );
        assert!(w.ready());
    }
    assert!(
        w.reaches(PAIE),
        "{name}: payroll unreachable after the window"
    );
    // Sessions and flows queue for the audit writer; what a long outage made it drop is counted.
    eprintln!(
        "{name}: audit records lost (sesame_audit_records_lost_total): {}",
        metric("sesame_audit_records_lost_total")
    );
    w.stop_serve();
    // The audit chain went through the outage intact.
    audit_verify(&w.config);
    Loss { ping, udp }
}

#[test]
fn database_and_directory_outage_loses_no_more_packets_than_both_up() {
    require_root!("network namespaces, TUN, wireguard-go");
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_a, go_a_rx) = mpsc::channel();
    let (go_b, go_b_rx) = mpsc::channel();
    let (a, b) = std::thread::scope(|s| {
        let ready_a = ready_tx.clone();
        let a = s.spawn(move || run("oa", true, ready_a, go_a_rx));
        let b = s.spawn(move || run("ob", false, ready_tx, go_b_rx));
        // Both windows start together, so both see the same machine load.
        for _ in 0..2 {
            if ready_rx.recv_timeout(Duration::from_secs(300)).is_err() {
                break;
            }
        }
        let _ = go_a.send(());
        let _ = go_b.send(());
        let a = a.join();
        let b = b.join();
        (
            a.unwrap_or_else(|e| std::panic::resume_unwind(e)),
            b.unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    eprintln!(
        "lost pings: A {} of {} (longest run {}), B {} of {} (longest run {}); lost UDP \
         datagrams: A {} of {}, B {} of {}",
        a.ping.lost(),
        a.ping.sent,
        a.ping.longest_gap,
        b.ping.lost(),
        b.ping.sent,
        b.ping.longest_gap,
        a.udp.lost,
        a.udp.sent,
        b.udp.lost,
        b.udp.sent
    );
    assert!(a.ping.sent > 0 && a.udp.sent > 0 && b.udp.sent > 0);
    // Tolerances: both worlds share two loaded cores, so each may lose a little at random
    // (scheduling, socket buffers); the outage itself must add nothing. A data plane that
    // dropped packets for one second would lose 5 pings in a row and about 1,040 datagrams,
    // above every bound below; a stalled one queues in socket buffers first (a 5 s SIGSTOP of
    // `sesame serve` in a 30 s window lost 0 pings but 664 datagrams: caught by the UDP bound).
    // Pings: one more than B (a single unlucky echo in A's window), and no longer run of
    // consecutive losses than B's plus one.
    assert!(
        a.ping.lost() <= b.ping.lost() + 1,
        "pings lost: A {} > B {} + 1",
        a.ping.lost(),
        b.ping.lost()
    );
    assert!(
        a.ping.longest_gap <= b.ping.longest_gap + 1,
        "longest run of lost pings: A {} > B {} + 1",
        a.ping.longest_gap,
        b.ping.longest_gap
    );
    // UDP: 0.1 % of what A sent more than B (600 datagrams over 10 minutes, less than a
    // second of the stream), or half of B's own loss when the machine's random loss is larger
    // than that: a CI run with fuzzing and benchmarks beside it lost 1,794 datagrams in B (no
    // outage) and 2,642 in A, a difference below one second of the stream (about 1,040),
    // which the fixed bound alone called a failure. A one-second stall still adds more than
    // half of such a B on top of it.
    let udp_tolerance = (a.udp.sent / 1000).max(b.udp.lost / 2);
    assert!(
        a.udp.lost <= b.udp.lost + udp_tolerance,
        "UDP datagrams lost: A {} > B {} + {udp_tolerance}",
        a.udp.lost,
        b.udp.lost
    );
}
