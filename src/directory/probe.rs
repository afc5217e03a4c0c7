//! TEMPORARY one-off timing probe for issue 11 (not to be merged): per-phase sums and counts,
//! printed to stderr every 5 s as deltas.
#![allow(clippy::print_stderr, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const LOGIN_TOTAL: usize = 0;
pub const LOGIN_LIMITER: usize = 1;
pub const LOGIN_AUTH: usize = 2;
pub const LOGIN_RECORD: usize = 3;
pub const LOGIN_AFTER: usize = 4;
pub const LDAP_SEARCH: usize = 5;
pub const LDAP_BIND: usize = 6;
pub const LDAP_CONNECT: usize = 7;
pub const LDAP_POOL_WAIT: usize = 8;
pub const AUTH_FIND_USER: usize = 9;
pub const AUTH_GROUPS: usize = 10;
pub const ENROL_TOTAL: usize = 11;
pub const ENROL_AUTH: usize = 12;
pub const ENROL_STORE: usize = 13;
pub const ENROL_PUBLISH: usize = 14;
pub const COMMIT_APPLY: usize = 15;
pub const COMMIT_ITEMS: usize = 16;
pub const ENROL_IN: usize = 17;
pub const ENROL_ADDR: usize = 18;
pub const COMMIT_TX_COMMIT: usize = 19;
pub const LOGIN_WRITES: usize = 20;
pub const RECONCILE: usize = 21;
pub const PUBLISH_LOCK_WAIT: usize = 22;
const N: usize = 23;
const NAMES: [&str; N] = [
    "login_total",
    "login_limiter",
    "login_auth",
    "login_record",
    "login_after",
    "ldap_search",
    "ldap_bind",
    "ldap_connect",
    "ldap_pool_wait",
    "auth_find_user",
    "auth_groups",
    "enrol_total",
    "enrol_auth",
    "enrol_store",
    "enrol_publish",
    "commit_apply(batch)",
    "commit_items",
    "enrol_in(item)",
    "enrol_used_addr",
    "commit_tx_commit",
    "login_writes(item)",
    "reconcile",
    "publish_lock_wait",
];
static SUM: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static CNT: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static MAX: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static START: Once = Once::new();

pub fn add(i: usize, since: Instant) {
    START.call_once(|| {
        std::thread::spawn(report);
    });
    let ns = since.elapsed().as_nanos() as u64;
    SUM[i].fetch_add(ns, Relaxed);
    MAX[i].fetch_max(ns, Relaxed);
    CNT[i].fetch_add(1, Relaxed);
}

pub fn count(i: usize, n: u64) {
    CNT[i].fetch_add(n, Relaxed);
}

fn report() {
    let mut last = [(0u64, 0u64); N];
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let mut line = String::from("PROBE");
        for i in 0..N {
            let (s, c) = (SUM[i].load(Relaxed), CNT[i].load(Relaxed));
            let (ds, dc) = (s - last[i].0, c - last[i].1);
            last[i] = (s, c);
            let mx = MAX[i].swap(0, Relaxed);
            if dc > 0 {
                line.push_str(&format!(
                    " {}={}x{:.0}us(max{:.0}ms)",
                    NAMES[i],
                    dc,
                    ds as f64 / dc as f64 / 1000.0,
                    mx as f64 / 1e6
                ));
            }
        }
        eprintln!("{line}");
    }
}

pub struct Guard(pub usize, pub Instant);
impl Drop for Guard {
    fn drop(&mut self) {
        add(self.0, self.1);
    }
}
