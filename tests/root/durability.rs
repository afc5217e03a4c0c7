//! Crash durability: `sesame serve` killed with SIGKILL at random moments while concurrent
//! clients enrol and revoke devices through the HTTP API, on SQLite and on PostgreSQL. After
//! the last restart every acknowledged change (201; 200 for a revocation) is there and audited, an unanswered
//! request left either all or nothing (a code is spent exactly when its device exists), and
//! `sesame audit verify` passes. Needs root (network namespace, TUN).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::require_root;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::{json, Value};

use common::durability::{Backend, Crashable};
use common::slapd::password_of;

/// Enrolment and revocation requests, in all (acknowledged or not).
const OPERATIONS: usize = 1000;
/// Concurrent API clients.
const CLIENTS: usize = 4;
/// VPN users the devices belong to; tleroux is also IT staff (revokes).
const USERS: &[&str] = &["mdupont", "fnoel", "sbernard", "tleroux"];
const IT: &str = "tleroux";
/// Share of operations that revoke a device acknowledged as enrolled.
const REVOKE_SHARE: f64 = 0.4;
/// Serve runs this long (uniformly random) between two kills.
const UP_MIN: Duration = Duration::from_millis(800);
const UP_MAX: Duration = Duration::from_millis(3000);
/// Whatever happens, the load stops after this.
const LOAD_LIMIT: Duration = Duration::from_secs(150);

fn new_public_key() -> String {
    sesame::key::PrivateKey::generate().public_key().to_base64()
}

#[derive(Clone, Debug)]
struct Attempt {
    code: String,
    user: String,
    key: String,
}

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    /// Acknowledged enrolments (201): device id → the attempt.
    enrolled: BTreeMap<i64, Attempt>,
    /// Acknowledged and not (yet) picked for revocation.
    active: Vec<i64>,
    /// Acknowledged revocations (204).
    revoked: HashSet<i64>,
    /// Requests that got no answer (the server was killed with them in flight).
    unanswered_enrols: Vec<Attempt>,
    unanswered_revokes: Vec<i64>,
    /// Every status seen (0: no answer).
    statuses: BTreeMap<u16, usize>,
    /// Answers that are neither an acknowledgement nor "no answer".
    unexpected: Vec<String>,
}

struct Load<'a> {
    c: &'a Crashable,
    up: AtomicBool,
    done: AtomicBool,
    operations: AtomicUsize,
    codes: Mutex<Vec<Attempt>>,
    ledger: Mutex<Ledger>,
}

impl Load<'_> {
    fn login(&self, jar: &Path) {
        let _ = std::fs::remove_file(jar);
        let (st, v) = self.c.api(
            "POST",
            "/api/v1/login",
            Some(&json!({"username": IT, "password": password_of(IT)})),
            Some(jar),
        );
        assert_eq!(st, 200, "IT login: {v}");
    }

    fn wait_up(&self) -> bool {
        while !self.up.load(Ordering::Acquire) {
            if self.done.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// One API client: enrols with the next code, or revokes a device it saw enrolled.
    fn client(&self, n: usize, started: Instant) {
        let jar = self.c.dir.path().join(format!("it-{n}.cookies"));
        let mut logged_in = false;
        let mut rng = rand::thread_rng();
        while self.operations.fetch_add(1, Ordering::AcqRel) < OPERATIONS
            && started.elapsed() < LOAD_LIMIT
        {
            if !self.wait_up() {
                break;
            }
            if !logged_in {
                self.login(&jar);
                logged_in = true;
            }
            let victim = if rng.gen_bool(REVOKE_SHARE) {
                let mut l = self.ledger.lock().unwrap();
                let len = l.active.len();
                (len > 0).then(|| l.active.swap_remove(rng.gen_range(0..len)))
            } else {
                None
            };
            match victim {
                Some(id) => {
                    let (st, v) =
                        self.c
                            .api("DELETE", &format!("/api/v1/devices/{id}"), None, Some(&jar));
                    let mut l = self.ledger.lock().unwrap();
                    *l.statuses.entry(st).or_default() += 1;
                    match st {
                        // 200 with the revoked device (the API's answer).
                        200 | 204 => {
                            l.revoked.insert(id);
                        }
                        0 => l.unanswered_revokes.push(id),
                        401 => {
                            // The session did not survive: not a change; log in again.
                            l.active.push(id);
                            logged_in = false;
                        }
                        _ => l.unexpected.push(format!("DELETE {id}: {st} {v}")),
                    }
                }
                None => {
                    let Some(a) = self.codes.lock().unwrap().pop() else {
                        break;
                    };
                    let body = json!({"code": a.code, "username": a.user,
                        "password": password_of(&a.user), "public_key": a.key,
                        "hostname": format!("host-{}", &a.code[..4])});
                    let (st, v) = self.c.api("POST", "/api/v1/enrol", Some(&body), None);
                    let mut l = self.ledger.lock().unwrap();
                    *l.statuses.entry(st).or_default() += 1;
                    match st {
                        201 => {
                            let id = v["device_id"].as_i64().expect("device_id");
                            l.enrolled.insert(id, a);
                            l.active.push(id);
                        }
                        0 => l.unanswered_enrols.push(a),
                        _ => l.unexpected.push(format!("enrol {}: {st} {v}", a.user)),
                    }
                }
            }
        }
    }
}

fn devices(c: &Crashable, jar: &Path) -> HashMap<i64, Value> {
    let (st, v) = c.api("GET", "/api/v1/devices", None, Some(jar));
    assert_eq!(st, 200, "{v}");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|d| (d["id"].as_i64().expect("id"), d.clone()))
        .collect()
}

fn crash_during_enrolments_and_revocations(backend: Backend) {
    let started = Instant::now();
    let c = Crashable::start(backend);
    let rows: Vec<(String, String)> = (0..OPERATIONS)
        .map(|i| (USERS[i % USERS.len()].to_string(), format!("pc-{i}")))
        .collect();
    let codes: Vec<Attempt> = c
        .codes(&rows)
        .into_iter()
        .zip(rows)
        .map(|(code, (user, _))| Attempt {
            code,
            user,
            key: new_public_key(),
        })
        .collect();
    let load = Load {
        c: &c,
        up: AtomicBool::new(true),
        done: AtomicBool::new(false),
        operations: AtomicUsize::new(0),
        codes: Mutex::new(codes),
        ledger: Mutex::new(Ledger::default()),
    };
    let load_started = Instant::now();
    let mut kills = 0;
    // The clients run on their own threads (in the namespace, like this one, which kills
    // and restarts serve at random moments).
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let load = &load;
                s.spawn(move || load.client(n, load_started))
            })
            .collect();
        let mut rng = rand::thread_rng();
        while !clients.iter().all(|h| h.is_finished()) {
            let up_for = rng.gen_range(UP_MIN..UP_MAX);
            let until = Instant::now() + up_for;
            while Instant::now() < until && !clients.iter().all(|h| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if clients.iter().all(|h| h.is_finished()) {
                break;
            }
            load.up.store(false, Ordering::Release);
            load.c.kill9();
            load.c.spawn();
            kills += 1;
            load.up.store(true, Ordering::Release);
        }
        load.done.store(true, Ordering::Release);
        for h in clients {
            h.join().unwrap();
        }
    });
    let load_time = load_started.elapsed();
    let ledger = load.ledger.into_inner().unwrap();
    drop(load.codes);
    // One more kill at rest, then the checks on a fresh start.
    c.kill9();
    c.spawn();
    eprintln!(
        "{backend:?}: {} operations in {load_time:?} with {kills} kills; statuses {:?}; \
         {} enrolled, {} revoked, {} + {} unanswered",
        load.operations.load(Ordering::Acquire).min(OPERATIONS),
        ledger.statuses,
        ledger.enrolled.len(),
        ledger.revoked.len(),
        ledger.unanswered_enrols.len(),
        ledger.unanswered_revokes.len()
    );
    assert!(
        ledger.unexpected.is_empty(),
        "answers that are neither an acknowledgement nor a cut connection: {:#?}",
        ledger.unexpected
    );
    assert!(kills >= 3, "the load outran the kills ({kills})");
    assert!(!ledger.enrolled.is_empty() && !ledger.revoked.is_empty());

    let jar = c.dir.path().join("check.cookies");
    let (st, v) = c.api(
        "POST",
        "/api/v1/login",
        Some(&json!({"username": IT, "password": password_of(IT)})),
        Some(&jar),
    );
    assert_eq!(st, 200, "{v}");
    let list = devices(&c, &jar);
    // Every acknowledged enrolment is there, with its key and owner; active unless revoked.
    for (id, a) in &ledger.enrolled {
        let d = list
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged device {id} lost"));
        assert_eq!(d["public_key"], a.key.as_str(), "device {id}");
        assert_eq!(d["username"], a.user.as_str(), "device {id}");
        let want = if ledger.revoked.contains(id) {
            "revoked"
        } else if ledger.unanswered_revokes.contains(id) {
            continue;
        } else {
            "active"
        };
        assert_eq!(d["status"], want, "device {id}: {d}");
    }
    // An unanswered enrolment is all or nothing: its device exists exactly when its code is
    // spent (a retry with the same code is refused), else the retry enrols.
    let by_key: HashMap<&str, &Value> = list
        .values()
        .map(|d| (d["public_key"].as_str().expect("key"), d))
        .collect();
    // Retries of spent codes are failed logins to the portal's limiter (5 a minute from one
    // source): the uncommitted ones first (successes), then a few of the committed ones.
    let (committed, uncommitted): (Vec<&Attempt>, Vec<&Attempt>) = ledger
        .unanswered_enrols
        .iter()
        .partition(|a| by_key.contains_key(a.key.as_str()));
    eprintln!(
        "{backend:?}: unanswered enrolments: {} committed, {} not",
        committed.len(),
        uncommitted.len()
    );
    for a in uncommitted.iter().chain(committed.iter().take(4)) {
        let body = json!({"code": a.code, "username": a.user, "password": password_of(&a.user),
            "public_key": a.key, "hostname": "retry"});
        let (st, v) = c.api("POST", "/api/v1/enrol", Some(&body), None);
        match by_key.get(a.key.as_str()) {
            Some(d) => {
                assert_eq!(d["username"], a.user.as_str());
                assert!(
                    (400..500).contains(&st) && st != 429,
                    "committed enrolment, retry answered {st} {v}"
                );
            }
            None => assert_eq!(st, 201, "nothing committed, the code must still work: {v}"),
        }
    }
    // An unanswered revocation did all or nothing; repeating it finishes it.
    for id in &ledger.unanswered_revokes {
        let (st, v) = c.api("DELETE", &format!("/api/v1/devices/{id}"), None, Some(&jar));
        assert!(st == 200 || st == 204, "{st} {v}");
    }
    let list = devices(&c, &jar);
    for id in &ledger.unanswered_revokes {
        assert_eq!(list[id]["status"], "revoked");
    }
    c.stop();
    // The audit chain verifies, and every acknowledged change is in it.
    common::serve::audit_verify(&c.config);
    let events = common::serve::audit_events(&c.config);
    let targets = |action: &str| -> HashSet<String> {
        events
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == "success")
            .map(|e| e["target"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let completed = targets("enrol.completed");
    let revoked = targets("device.revoked");
    for id in ledger.enrolled.keys() {
        assert!(
            completed.contains(&format!("device:{id}")),
            "no enrol.completed for {id}"
        );
    }
    for id in &ledger.revoked {
        assert!(
            revoked.contains(&format!("device:{id}")),
            "no device.revoked for {id}"
        );
    }
    eprintln!("{backend:?}: checked in {:?} in all", started.elapsed());
}

#[test]
fn sqlite_survives_kill_9_during_enrolments_and_revocations() {
    require_root!("a network namespace and a TUN device for sesame serve");
    crash_during_enrolments_and_revocations(Backend::Sqlite);
}

#[test]
fn postgres_survives_kill_9_during_enrolments_and_revocations() {
    require_root!("a network namespace and a TUN device for sesame serve");
    crash_during_enrolments_and_revocations(Backend::Postgres);
}
