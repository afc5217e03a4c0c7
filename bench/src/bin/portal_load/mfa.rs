//! portal_load's second-factor operations: `mfa-setup` (TOTP factors registered), `login-mfa` and `unlock`.
//!
//! Each `login-mfa`/`unlock` client owns its users and gives each one increasing TOTP steps
//! (`sesame_bench::totp`): the portal accepts a step once per user.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore as _};
use sesame_bench::totp;

use super::{answer, read_csv, Args, Op, Run, Tally};

/// A bench user with a confirmed factor (a row of `--op mfa-setup`'s output).
pub(crate) struct MfaUser {
    user: String,
    password: String,
    secret: Vec<u8>,
    token: String,
    /// The last step the portal accepted, or may have accepted, for this user.
    last_step: Option<i64>,
}

pub(crate) fn read_mfa_users(path: &str) -> Result<Vec<MfaUser>, String> {
    read_csv(path)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let field = |k: &str| {
                r.get(k).cloned().ok_or_else(|| {
                    format!("{path}: no column {k:?} (the output of --op mfa-setup)")
                })
            };
            let secret = sesame::mfa::totp::from_base32(&field("secret")?)
                .ok_or_else(|| format!("{path}:{}: the secret is not base32", i + 2))?;
            let step = field("step")?
                .parse()
                .map_err(|_| format!("{path}:{}: the step is not a number", i + 2))?;
            Ok(MfaUser {
                user: field("user")?,
                password: field("password")?,
                secret,
                token: field("token")?,
                last_step: Some(step),
            })
        })
        .collect()
}

/// One login with the code (`login-mfa`) or one unlock (`unlock`) as `u`.
async fn send_mfa(
    client: &reqwest::Client,
    url: &str,
    op: Op,
    u: &MfaUser,
    code: &str,
) -> Result<(), (String, String)> {
    let req = match op {
        Op::Unlock => client
            .post(format!("{url}/api/v1/device/unlock"))
            .bearer_auth(&u.token)
            .body(serde_json::json!({ "code": code }).to_string()),
        _ => client.post(format!("{url}/api/v1/login")).body(
            serde_json::json!({"username": u.user, "password": u.password, "otp": code})
                .to_string(),
        ),
    };
    let a = answer(req.header("content-type", "application/json")).await?;
    let good = match op {
        Op::Unlock => a.status == 200 && a.json["expires_at"].is_string(),
        _ => {
            a.status == 200
                && a.has_cookie
                && a.json["username"].as_str() == Some(u.user.as_str())
                && a.json["roles"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x == "it_staff"))
        }
    };
    if good {
        Ok(())
    } else {
        Err(a.error())
    }
}

/// A `login-mfa` or `unlock` client: its own users, each given increasing steps.
pub(crate) async fn mfa_client_loop(
    client: reqwest::Client,
    run: Arc<Run>,
    mut users: Vec<MfaUser>,
) -> Tally {
    let mut t = Tally::default();
    let mut cursor = 0;
    let n = users.len();
    loop {
        let start = Instant::now();
        if start >= run.deadline {
            break;
        }
        if start >= run.measure_from && run.limit > 0 && t.latencies_us.len() >= run.limit {
            break;
        }
        let now = totp::unix_now();
        let pick = (0..n)
            .map(|k| (cursor + k) % n)
            .find_map(|i| totp::next_step(users[i].last_step, now).map(|step| (i, step)));
        let Some((i, step)) = pick else {
            // Every user of this client spent this step's codes: the pool is too small for the
            // rate. Wait for the next step, and say so.
            *t.errors.entry("pool_exhausted".into()).or_default() += 1;
            t.first_error.get_or_insert_with(|| {
                format!("pool_exhausted: {n} users per client spent their codes of this step")
            });
            let wait = Duration::from_secs_f64((totp::next_boundary(now) - now).max(0.0) + 0.05);
            let until = (start + wait).min(run.deadline);
            tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
            continue;
        };
        cursor = (i + 1) % n;
        let u = &mut users[i];
        // Spent whatever the answer: a request that failed may have been accepted.
        u.last_step = Some(step);
        let code = totp::code(&u.secret, step);
        let res = send_mfa(&client, &run.url, run.op, u, &code).await;
        if start < run.measure_from {
            continue;
        }
        t.record(start, res);
    }
    t
}

/// Enrols `user` with `code` (the answer hands out a factor to register) and confirms the
/// factor with its first code; returns the `factors.csv` row.
async fn enrol_and_register(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
    code: &str,
) -> Result<String, String> {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let public = sesame::key::PrivateKey::from_bytes(seed).public_key();
    let body = serde_json::json!({
        "code": code, "username": user, "password": password,
        "public_key": public.to_base64(), "hostname": format!("mfa-pc-{user}"),
    });
    let req = client
        .post(format!("{url}/api/v1/enrol"))
        .header("content-type", "application/json")
        .body(body.to_string());
    let a = answer(req).await.map_err(|(k, d)| format!("{k}: {d}"))?;
    let (Some(token), Some(secret)) = (
        a.json["device_token"].as_str(),
        a.json["mfa_registration"]["secret"].as_str(),
    ) else {
        let (k, d) = a.error();
        return Err(format!(
            "enrol {user}: expected 201 with a factor to register, got {k}: {d}"
        ));
    };
    let bytes = sesame::mfa::totp::from_base32(secret)
        .ok_or_else(|| format!("enrol {user}: the secret {secret:?} is not base32"))?;
    let step = totp::next_step(None, totp::unix_now()).unwrap_or_default();
    let req = client
        .post(format!("{url}/api/v1/device/mfa/confirm"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "code": totp::code(&bytes, step) }).to_string());
    let a = answer(req).await.map_err(|(k, d)| format!("{k}: {d}"))?;
    let recovery = a.json["recovery_codes"].as_array().map_or(0, Vec::len);
    if a.status != 200 || recovery != 10 {
        let (k, d) = a.error();
        return Err(format!(
            "confirm {user}: expected 200 with 10 recovery codes, got {k}: {d}"
        ));
    }
    Ok(format!("{user},{password},{secret},{token},{step}"))
}

/// `--op mfa-setup`: every user of the codes file enrolled once and its factor confirmed,
/// concurrently; writes `--out`, then checks that the password alone no longer signs in.
pub(crate) async fn mfa_setup(
    a: &Args,
    client: reqwest::Client,
) -> Result<serde_json::Value, String> {
    let passwords: HashMap<String, String> = read_csv(&a.users)?
        .into_iter()
        .map(|r| (r["user"].clone(), r["password"].clone()))
        .collect();
    let codes_path = a.codes.as_deref().unwrap_or_default();
    let todo: Vec<(String, String, String)> = read_csv(codes_path)?
        .into_iter()
        .map(|c| {
            let user = c["user"].clone();
            let password = passwords
                .get(&user)
                .cloned()
                .ok_or_else(|| format!("{codes_path}: user {user:?} is not in {}", a.users))?;
            Ok((user, password, c["code"].clone()))
        })
        .collect::<Result<_, String>>()?;
    let first_user = todo
        .first()
        .cloned()
        .ok_or_else(|| format!("{codes_path}: no codes"))?;
    let todo = Arc::new(todo);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.clients {
        let (client, url, todo, next) = (
            client.clone(),
            a.url.clone(),
            Arc::clone(&todo),
            Arc::clone(&next),
        );
        tasks.spawn(async move {
            let mut rows = Vec::new();
            while let Some((user, password, code)) = todo.get(next.fetch_add(1, Ordering::Relaxed))
            {
                rows.push(enrol_and_register(&client, &url, user, password, code).await?);
            }
            Ok::<_, String>(rows)
        });
    }
    let mut rows = vec!["user,password,secret,token,step".to_string()];
    while let Some(r) = tasks.join_next().await {
        rows.extend(r.map_err(|e| format!("a setup task failed: {e}"))??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let out = a.out.as_deref().unwrap_or_default();
    std::fs::write(out, rows.join("\n") + "\n").map_err(|e| format!("{out}: {e}"))?;
    // The factor is in force: the password alone is refused for this web_roles holder.
    let (user, password, _) = first_user;
    let req = client
        .post(format!("{}/api/v1/login", a.url))
        .header("content-type", "application/json")
        .body(serde_json::json!({"username": user, "password": password}).to_string());
    let ans = answer(req).await.map_err(|(k, d)| format!("{k}: {d}"))?;
    if ans.error().0 != "401 mfa_required" {
        let (k, d) = ans.error();
        return Err(format!(
            "login of {user} without a code: expected 401 mfa_required, got {k}: {d}"
        ));
    }
    Ok(serde_json::json!({
        "label": a.label, "op": "mfa-setup", "users": rows.len() - 1,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "login_without_code": "401 mfa_required",
    }))
}
