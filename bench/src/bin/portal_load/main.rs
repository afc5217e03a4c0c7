//! Portal load client: C concurrent HTTP clients posting logins, enrolments, logins with a
//! second factor or device unlocks for D seconds or N requests, with per-request latency;
//! prints one JSON line per run (bench/portal.sh).
//!
//! ```text
//! portal_load --url http://127.0.0.1:8080 --op login --clients 50 --duration 10 \
//!             --users users.csv [--requests N] [--warmup 1] [--label sqlite]
//! portal_load --url ... --op enrol --clients 50 --duration 10 --users users.csv \
//!             --codes codes.csv [--label postgres]
//! portal_load --op bind --ldap ldap://127.0.0.1:389 --bind-dn 'uid={},ou=people,dc=x' \
//!             --clients 50 --duration 10 --users users.csv
//! portal_load --url ... --op mfa-setup --clients 50 --users mfa-users.csv --codes codes.csv \
//!             --out factors.csv
//! portal_load --url ... --op login-mfa|unlock --clients 50 --duration 10 --users factors.csv
//! portal_load --url http://127.0.0.1:8080,http://127.0.0.1:8081 --op login ...   (clients spread
//!   over several portals, round robin: `login` and `enrol` only)
//! ```
//! `--op bind` measures the directory alone: each client holds one LDAP connection and does
//! simple binds as the users in turn (the raw bind rate logins are compared with).
//!
//! `users.csv`: header `user,password`; logins rotate over its rows. `codes.csv`: the output of
//! `sesame enrol-code create --csv` (header `user,device,code,expires_at`); each enrolment
//! redeems the next unused code with a fresh X25519 key (generated before the clock starts, as
//! a laptop's agent would). A request counts as OK only with the expected status (login 200
//! with a session cookie, enrol 201 with a device token); anything else is an error, counted
//! by status and API error code.
//!
//! The second factor (TOTP, issue 19): `--op mfa-setup` (not timed) enrols each user of the
//! codes file once, which hands out a factor to register, and confirms it with a first code;
//! it writes `factors.csv` (header `user,password,secret,token,step`: the base32 secret, the
//! device token and the step the confirmation spent), then checks that a login without a code
//! is refused (401 `mfa_required`). `--op login-mfa` is the web login of a `[mfa] web_roles`
//! holder: `POST /api/v1/login` with the password and the current code, OK only with 200, the
//! session cookie and the `it_staff` role. `--op unlock` is `POST /api/v1/device/unlock` with
//! the device token and a code, OK only with 200 and `expires_at`. A step is accepted once per
//! user, so each client owns its share of the users and gives each of them increasing steps
//! (`sesame_bench::totp`); a client whose users have all spent their steps waits for the next
//! step and counts a `pool_exhausted` error (the pool was too small for the rate).
// A command-line tool: its result is its stdout.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore as _};

mod mfa;
use mfa::{mfa_client_loop, mfa_setup, read_mfa_users, MfaUser};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Login,
    Enrol,
    Bind,
    MfaSetup,
    LoginMfa,
    Unlock,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Enrol => "enrol",
            Op::Bind => "bind",
            Op::MfaSetup => "mfa-setup",
            Op::LoginMfa => "login-mfa",
            Op::Unlock => "unlock",
        }
    }
}

#[derive(Debug)]
struct Args {
    url: String,
    op: Op,
    clients: usize,
    duration: Duration,
    requests: usize,
    warmup: Duration,
    users: String,
    codes: Option<String>,
    label: String,
    ldap: String,
    bind_dn: String,
    out: Option<String>,
}

const USAGE: &str = "usage: portal_load --op login|enrol|bind|mfa-setup|login-mfa|unlock --users FILE \
[--codes FILE] [--out FILE] [--ldap URL --bind-dn TEMPLATE] [--url http://127.0.0.1:8080] [--clients 50] [--duration SECS] [--requests N] [--warmup SECS] [--label TEXT]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        op: Op::Login,
        clients: 50,
        duration: Duration::from_secs(10),
        requests: 0,
        warmup: Duration::ZERO,
        users: String::new(),
        codes: None,
        ldap: "ldap://127.0.0.1:389".into(),
        bind_dn: String::new(),
        label: String::new(),
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let secs = |v: String| -> Result<Duration, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{flag}: not a number of seconds: {v:?}"))
        };
        let count = |v: String| -> Result<usize, String> {
            v.parse().map_err(|_| format!("{flag}: not a count: {v:?}"))
        };
        match flag.as_str() {
            "--url" => a.url = value()?.trim_end_matches('/').to_string(),
            "--op" => {
                a.op = match value()?.as_str() {
                    "login" => Op::Login,
                    "enrol" => Op::Enrol,
                    "bind" => Op::Bind,
                    "mfa-setup" => Op::MfaSetup,
                    "login-mfa" => Op::LoginMfa,
                    "unlock" => Op::Unlock,
                    other => {
                        return Err(format!(
                        "--op: login, enrol, bind, mfa-setup, login-mfa or unlock, not {other:?}"
                    ))
                    }
                }
            }
            "--clients" => a.clients = count(value()?)?.max(1),
            "--duration" => a.duration = secs(value()?)?,
            "--requests" => a.requests = count(value()?)?,
            "--warmup" => a.warmup = secs(value()?)?,
            "--users" => a.users = value()?,
            "--codes" => a.codes = Some(value()?),
            "--label" => a.label = value()?,
            "--ldap" => a.ldap = value()?,
            "--bind-dn" => a.bind_dn = value()?,
            "--out" => a.out = Some(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.users.is_empty() {
        return Err(format!("--users FILE is required\n{USAGE}"));
    }
    if a.op == Op::Bind && !a.bind_dn.contains("{}") {
        return Err(format!(
            "--op bind needs --bind-dn with {{}} for the user\n{USAGE}"
        ));
    }
    if matches!(a.op, Op::Enrol | Op::MfaSetup) && a.codes.is_none() {
        return Err(format!("--op {} needs --codes FILE\n{USAGE}", a.op.name()));
    }
    if a.op == Op::MfaSetup && a.out.is_none() {
        return Err(format!("--op mfa-setup needs --out FILE\n{USAGE}"));
    }
    Ok(a)
}

/// Rows of a small CSV with a header: a map per row (no quoting needed for bench files).
fn read_csv(path: &str) -> Result<Vec<HashMap<String, String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| format!("{path}: empty file"))?
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    lines
        .enumerate()
        .map(|(i, l)| {
            let cells: Vec<&str> = l.split(',').collect();
            if cells.len() != header.len() {
                return Err(format!(
                    "{path}:{}: {} fields, expected {}",
                    i + 2,
                    cells.len(),
                    header.len()
                ));
            }
            Ok(header
                .iter()
                .cloned()
                .zip(cells.iter().map(|c| c.trim().to_string()))
                .collect())
        })
        .collect()
}

/// One request to send: path and JSON body (for a bind: the DN and the password).
struct Job {
    path: &'static str,
    body: String,
}

fn build_jobs(a: &Args) -> Result<Vec<Job>, String> {
    let users = read_csv(&a.users)?;
    let passwords: HashMap<String, String> = users
        .iter()
        .map(|r| (r["user"].clone(), r["password"].clone()))
        .collect();
    if users.is_empty() {
        return Err(format!("{}: no users", a.users));
    }
    match a.op {
        Op::Bind => Ok(users
            .iter()
            .map(|u| Job {
                path: "",
                body: format!("{}\n{}", a.bind_dn.replace("{}", &u["user"]), u["password"]),
            })
            .collect()),
        Op::Login => Ok(users
            .iter()
            .map(|u| Job {
                path: "/api/v1/login",
                body: serde_json::json!({"username": u["user"], "password": u["password"]})
                    .to_string(),
            })
            .collect()),
        Op::Enrol => {
            let path = a.codes.as_deref().unwrap_or_default();
            read_csv(path)?
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let user = &c["user"];
                    let password = passwords
                        .get(user)
                        .ok_or_else(|| format!("{path}: user {user:?} is not in {}", a.users))?;
                    let mut seed = [0u8; 32];
                    OsRng.fill_bytes(&mut seed);
                    let public = sesame::key::PrivateKey::from_bytes(seed).public_key();
                    Ok(Job {
                        path: "/api/v1/enrol",
                        body: serde_json::json!({
                            "code": c["code"],
                            "username": user,
                            "password": password,
                            "public_key": public.to_base64(),
                            "hostname": format!("bench-pc-{i}"),
                        })
                        .to_string(),
                    })
                })
                .collect()
        }
        Op::MfaSetup | Op::LoginMfa | Op::Unlock => {
            Err(format!("--op {}: not a list of jobs", a.op.name()))
        }
    }
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    /// Latencies of measured requests (after the warm-up), microseconds.
    latencies_us: Vec<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

impl Tally {
    /// One measured request: its latency since `start`, and its outcome.
    fn record(&mut self, start: Instant, res: Result<(), (String, String)>) {
        self.latencies_us.push(start.elapsed().as_micros() as u64);
        match res {
            Ok(()) => self.ok += 1,
            Err((kind, detail)) => {
                *self.errors.entry(kind.clone()).or_default() += 1;
                self.first_error.get_or_insert(format!("{kind}: {detail}"));
            }
        }
    }
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    job: &Job,
    op: Op,
) -> Result<(), (String, String)> {
    let req = client
        .post(format!("{url}{}", job.path))
        .header("content-type", "application/json")
        .body(job.body.clone());
    let a = answer(req).await?;
    let good = match op {
        Op::Login => a.status == 200 && a.has_cookie && a.json["username"].is_string(),
        Op::Enrol => a.status == 201 && a.json["device_token"].is_string(),
        Op::Bind | Op::MfaSetup | Op::LoginMfa | Op::Unlock => false,
    };
    if good {
        Ok(())
    } else {
        Err(a.error())
    }
}

/// What the portal answered to one request.
struct Answer {
    status: u16,
    has_cookie: bool,
    json: serde_json::Value,
    body: String,
}

impl Answer {
    /// The error kind ("STATUS api_code") and the start of the body.
    fn error(&self) -> (String, String) {
        let code = self.json["error"]["code"]
            .as_str()
            .unwrap_or("unexpected_body");
        (
            format!("{} {code}", self.status),
            self.body.chars().take(300).collect(),
        )
    }
}

/// Sends `req` and reads the whole answer (a transport failure is the error kind `transport`).
async fn answer(req: reqwest::RequestBuilder) -> Result<Answer, (String, String)> {
    let resp = req
        .send()
        .await
        .map_err(|e| ("transport".to_string(), e.to_string()))?;
    let status = resp.status().as_u16();
    let has_cookie = resp.headers().contains_key("set-cookie");
    let body = resp
        .text()
        .await
        .map_err(|e| ("transport".to_string(), e.to_string()))?;
    let json = serde_json::from_str(&body).unwrap_or_default();
    Ok(Answer {
        status,
        has_cookie,
        json,
        body,
    })
}

/// One simple bind on the client's own LDAP connection.
async fn bind(ldap: &mut ldap3::Ldap, job: &Job) -> Result<(), (String, String)> {
    let (dn, password) = job.body.split_once('\n').unwrap_or_default();
    match ldap.simple_bind(dn, password).await {
        Ok(r) if r.rc == 0 => Ok(()),
        Ok(r) => Err((format!("ldap rc {}", r.rc), r.text)),
        Err(e) => Err(("transport".to_string(), e.to_string())),
    }
}

/// What every client shares.
struct Run {
    url: String,
    ldap: String,
    jobs: Vec<Job>,
    /// Index of the next job to take.
    next: AtomicUsize,
    op: Op,
    /// Requests per client after the warm-up (0: until the deadline).
    limit: usize,
    measure_from: Instant,
    deadline: Instant,
}

/// One client: `url` is the portal it talks to (client k of `--url A,B` talks to the k-th
/// modulo 2, as a load balancer spreading connections would).
async fn client_loop(client: reqwest::Client, run: Arc<Run>, url: String) -> Tally {
    let url = url.as_str();
    let Run {
        url: _,
        ldap: ldap_url,
        jobs,
        next,
        op,
        limit,
        measure_from,
        deadline,
    } = &*run;
    let (op, limit, measure_from, deadline) = (*op, *limit, *measure_from, *deadline);
    let mut t = Tally::default();
    let mut ldap = None;
    if op == Op::Bind {
        match ldap3::LdapConnAsync::new(ldap_url).await {
            Ok((conn, l)) => {
                ldap3::drive!(conn);
                ldap = Some(l);
            }
            Err(e) => {
                t.first_error = Some(format!("cannot connect to {ldap_url}: {e}"));
                *t.errors.entry("transport".into()).or_default() += 1;
                return t;
            }
        }
    }
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        // Enrolment codes are single-use: never wrap around. Logins rotate over the users.
        let job = match op {
            Op::Enrol => match jobs.get(i) {
                Some(j) => j,
                None => break,
            },
            _ => &jobs[i % jobs.len()],
        };
        let start = Instant::now();
        if start >= measure_from && limit > 0 && t.latencies_us.len() >= limit {
            break;
        }
        let res = match ldap.as_mut() {
            Some(l) => bind(l, job).await,
            None => send(&client, url, job, op).await,
        };
        if start < measure_from {
            continue;
        }
        t.record(start, res);
    }
    t
}

/// Nearest-rank percentile of sorted values, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn fail(message: &str) -> ! {
    eprintln!("portal_load: {message}");
    std::process::exit(2);
}

/// Every client's tally, merged.
async fn join_all(mut tasks: tokio::task::JoinSet<Tally>) -> Tally {
    let mut all = Tally::default();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(t) => {
                all.latencies_us.extend(t.latencies_us);
                all.ok += t.ok;
                for (k, v) in t.errors {
                    *all.errors.entry(k).or_default() += v;
                }
                if all.first_error.is_none() {
                    all.first_error = t.first_error;
                }
            }
            Err(e) => fail(&format!("a client task failed: {e}")),
        }
    }
    all
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| fail(&e));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot build the HTTP client: {e}")));
    if args.op == Op::MfaSetup {
        match mfa_setup(&args, client).await {
            Ok(summary) => println!("{summary}"),
            Err(e) => fail(&format!("mfa-setup: {e}")),
        }
        return;
    }
    let mfa = matches!(args.op, Op::LoginMfa | Op::Unlock);
    let (jobs, mfa_users) = if mfa {
        let users = read_mfa_users(&args.users).unwrap_or_else(|e| fail(&e));
        if users.len() < args.clients {
            fail(&format!(
                "{}: {} users for {} clients (each client needs its own)",
                args.users,
                users.len(),
                args.clients
            ));
        }
        (Vec::new(), users)
    } else {
        (build_jobs(&args).unwrap_or_else(|e| fail(&e)), Vec::new())
    };
    // Per-client request budget so that --requests N is N in total (±clients).
    let per_client = if args.requests > 0 {
        args.requests.div_ceil(args.clients)
    } else {
        0
    };
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let run = Arc::new(Run {
        url: args.url.clone(),
        ldap: args.ldap.clone(),
        jobs,
        next: AtomicUsize::new(0),
        op: args.op,
        limit: per_client,
        measure_from,
        deadline: measure_from + args.duration,
    });
    let mut tasks = tokio::task::JoinSet::new();
    if mfa {
        // Client k owns users k, k + C, k + 2C…: one user's codes are never in flight twice.
        let mut shares: Vec<Vec<MfaUser>> = (0..args.clients).map(|_| Vec::new()).collect();
        for (i, u) in mfa_users.into_iter().enumerate() {
            shares[i % args.clients].push(u);
        }
        for mine in shares {
            tasks.spawn(mfa_client_loop(client.clone(), Arc::clone(&run), mine));
        }
    } else {
        let urls: Vec<&str> = args.url.split(',').collect();
        for k in 0..args.clients {
            let url = urls[k % urls.len()].trim_end_matches('/').to_string();
            tasks.spawn(client_loop(client.clone(), Arc::clone(&run), url));
        }
    }
    let all = join_all(tasks).await;
    let elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let mut lat = all.latencies_us;
    lat.sort_unstable();
    let requests = lat.len() as u64;
    let errors: u64 = all.errors.values().sum();
    let out = serde_json::json!({
        "label": args.label,
        "op": args.op.name(),
        "clients": args.clients,
        "requests": requests,
        "ok": all.ok,
        "errors": errors,
        "error_kinds": all.errors,
        "first_error": all.first_error,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "req_per_s": if elapsed > 0.0 { (requests as f64 / elapsed * 10.0).round() / 10.0 } else { 0.0 },
        "ok_per_s": if elapsed > 0.0 { (all.ok as f64 / elapsed * 10.0).round() / 10.0 } else { 0.0 },
        "p50_ms": percentile_ms(&lat, 50.0),
        "p90_ms": percentile_ms(&lat, 90.0),
        "p99_ms": percentile_ms(&lat, 99.0),
        "max_ms": percentile_ms(&lat, 100.0),
    });
    println!("{out}");
}
