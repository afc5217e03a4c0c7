//! The portal's HTTP API against a real slapd and a real SQLite file: journeys, every bad
//! input (with the store checked unchanged), outages, directory sync, key expiry.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::cli;
use crate::common::harness;
use crate::common::steps::step_async;
use crate::common::store_db::audit_of;

use std::time::{Duration, Instant};

use harness::{error_of, laptop_key, Harness, GATEWAY_KEY, PAIE_ICMP_NET, PAIE_NET, RH_NET};
use serde_json::{json, Value};

use common::slapd::password_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_config_rotate_revoke_journey() {
    let h = Harness::start().await;
    let it = h.login("tleroux").await;
    let code = h.code_for(&it, "mdupont", "portable-marie").await;
    let c = h.browser();

    let (key_bytes, token) = step_async(
        "enrol: 201 with the paie networks only, a token, and the peer published at once",
        async {
            let (key, key_bytes) = laptop_key();
            let r = h.enrol(&code, "mdupont", &key).await;
            assert_eq!(r.status(), 201);
            let cfg: Value = r.json().await.unwrap();
            let mut allowed: Vec<&str> = cfg["allowed_ips"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            allowed.sort();
            assert_eq!(allowed, vec![PAIE_ICMP_NET]); // 198.18.10.10/32 ⊂ 198.18.10.0/28, aggregated
            assert_eq!(cfg["tunnel_address"], "100.64.0.2");
            assert_eq!(cfg["gateway"]["endpoint"], "198.18.0.1:51820");
            assert_eq!(cfg["dns"], json!(["198.18.0.53"]));
            assert_eq!(cfg["resources"][0]["name"], "paie");
            assert!(!cfg["expires_at"].as_str().unwrap().is_empty());
            let token = cfg["device_token"].as_str().unwrap().to_string();
            let peer = h
                .sink
                .peer(&key_bytes)
                .expect("peer published before the 201");
            assert_eq!(peer.address.to_string(), "100.64.0.2");
            assert!(peer.rules.allows("198.18.10.10".parse().unwrap(), 6, 443));
            assert!(!peer.rules.allows("198.18.20.1".parse().unwrap(), 6, 443));
            // Published incrementally (this one peer, no whole-set recompute), and identical to what the
            // full computation from the store gives for it.
            assert_eq!(*h.sink.upserts.lock(), 1);
            let full = h.control.compute().await.unwrap();
            assert_eq!(full.iter().find(|p| p.public_key == key_bytes), Some(&peer));
            (key_bytes, token)
        },
    )
    .await;

    step_async("the same code again: gone", async {
        let (key2, _) = laptop_key();
        assert_eq!(
            error_of(h.enrol(&code, "mdupont", &key2).await).await,
            (410, "code_already_used".into())
        );
    })
    .await;

    step_async(
        "device config with the bearer token; without it, 401",
        async {
            let r = c
                .get(h.url("/api/v1/device/config"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let cfg2: Value = r.json().await.unwrap();
            assert_eq!(cfg2["tunnel_address"], "100.64.0.2");
            assert!(cfg2.get("device_token").is_none());
            let r = c.get_at("/api/v1/device/config").await;
            assert_eq!(error_of(r).await, (401, "unauthenticated".into()));
        },
    )
    .await;

    let (new_key, new_bytes, token) = step_async(
        "rotate: the gateway's set holds the new key and no longer the old one, before the answer",
        async {
            let (new_key, new_bytes) = laptop_key();
            let r = c.rotate(&token, &new_key).await;
            assert_eq!(r.status(), 200);
            assert!(h.sink.peer(&new_bytes).is_some());
            assert!(h.sink.peer(&key_bytes).is_none());
            // A new token comes with the new key; the old one is dead.
            let old_token = token;
            let token = r.json::<Value>().await.unwrap()["device_token"]
                .as_str()
                .unwrap()
                .to_string();
            assert_ne!(token, old_token);
            let r = c
                .get(h.url("/api/v1/device/config"))
                .bearer_auth(&old_token)
                .send()
                .await
                .unwrap();
            assert_eq!(error_of(r).await, (401, "unauthenticated".into()));
            // Incrementally too (old key removed, new key added): the gateway's set is the full set.
            assert_eq!(*h.sink.upserts.lock(), 2);
            let full = h.control.compute().await.unwrap();
            assert_eq!(h.sink.last.lock().clone().unwrap(), full);
            // Rotating to the gateway's key or an already used key is refused.
            use base64::Engine as _;
            let gw = base64::engine::general_purpose::STANDARD.encode(GATEWAY_KEY);
            let r = c.rotate(&token, &gw).await;
            assert_eq!(error_of(r).await, (400, "invalid_public_key".into()));
            // A second rotation right away is refused (one per 10 minutes per device); both failed
            // attempts are audited.
            let (k3, _) = laptop_key();
            let r = c.rotate(&token, &k3).await;
            assert_eq!(error_of(r).await, (429, "too_many_attempts".into()));
            let failed: Vec<_> = h
                .store
                .list_audit(&sesame::store::AuditFilter {
                    action: Some("device.rotated".into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.outcome != sesame::audit::Outcome::Success)
                .collect();
            assert_eq!(failed.len(), 2, "{failed:?}");
            (new_key, new_bytes, token)
        },
    )
    .await;

    step_async(
        "IT staff sees the device and revokes it: the peer disappears, the token stops working",
        async {
            let list: Value = it.get_at("/api/v1/devices").await.json().await.unwrap();
            let id = list[0]["id"].as_i64().unwrap();
            assert_eq!(list[0]["username"], "mdupont");
            assert_eq!(list[0]["public_key"], new_key);
            let r = it.delete_at(&format!("/api/v1/devices/{id}")).await;
            assert_eq!(r.status(), 200);
            assert!(h.sink.peer(&new_bytes).is_none(), "revocation cuts at once");
            let r = c
                .get(h.url("/api/v1/device/config"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let (status, code) = error_of(r).await;
            assert_eq!((status, code.as_str()), (403, "device_revoked"));
        },
    )
    .await;

    step_async(
        "audit: the journey is in the log, the chain verifies, CSV export works",
        async {
            let auditor = h.login("cgarnier").await;
            let events: Value = auditor
                .get_at("/api/v1/audit/events?user=mdupont")
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(events["next_cursor"], Value::Null, "one page");
            let actions: Vec<&str> = events["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["action"].as_str().unwrap())
                .collect();
            for a in [
                "enrol.code_created",
                "enrol.completed",
                "device.rotated",
                "enrol.rejected",
            ] {
                assert!(actions.contains(&a), "{a} in {actions:?}");
            }
            let revoked = auditor
                .get_at("/api/v1/audit/events?action=device.revoked")
                .await
                .json::<Value>()
                .await
                .unwrap();
            assert_eq!(revoked["events"].as_array().unwrap().len(), 1);
            assert_eq!(revoked["events"][0]["actor"], "tleroux");
            let csv = auditor
                .get_at("/api/v1/audit/events?format=csv&since=2000-01-01")
                .await;
            assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
            let text = csv.text().await.unwrap();
            assert!(text.starts_with(
                "id,ts,actor,action,target,outcome,source_ip,details,prev_hash,hash\n"
            ));
            let v: Value = auditor
                .get_at("/api/v1/audit/verify")
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(v["intact"], true);
            assert!(v["events"].as_i64().unwrap() >= 6);
        },
    )
    .await;

    step_async(
        "metrics count what happened (on their own listener: the portal has no /metrics)",
        async {
            let r = reqwest::get(h.url("/metrics")).await.unwrap();
            assert_eq!(r.status(), 404);
            let m = h.metrics.render();
            assert!(
                m.contains("sesame_enrolments_total{outcome=\"success\"} 1"),
                "{m}"
            );
            assert!(
                m.contains("sesame_logins_total{outcome=\"success\"} 2"),
                "{m}"
            );
            assert!(m.contains("sesame_revocations_total 1"), "{m}");
            assert!(m.contains("sesame_rotations_total 1"), "{m}");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_enrolment_is_refused_and_writes_nothing() {
    let h = Harness::start_lenient().await;
    let it = h.login("tleroux").await;
    let code = h.code_for(&it, "mdupont", "portable-marie").await;
    let code_sb = h.code_for(&it, "sbernard", "portable-sophie").await;
    let (key, _) = laptop_key();
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let c = reqwest::Client::new();
    let post = |body: Value| {
        let c = c.clone();
        let url = h.url("/api/v1/enrol");
        async move { c.post(url).json(&body).send().await.unwrap() }
    };
    let body = |code: &str, user: &str, pw: &str, key: &str| json!({"code": code, "username": user, "password": pw, "public_key": key, "hostname": "pc"});
    let marie = password_of("mdupont");
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            body(&code, "mdupont", "wrong-password", &key),
            401,
            "invalid_credentials",
        ),
        (body(&code, "mdupont", "", &key), 400, "empty_password"),
        (body(&code, "mdupont", "   ", &key), 400, "empty_password"),
        (body(&code, "*", marie, &key), 401, "invalid_credentials"),
        (
            body(&code, "*)(uid=*", marie, &key),
            401,
            "invalid_credentials",
        ),
        (
            body(&code, "mdupont)(|(uid=*", marie, &key),
            401,
            "invalid_credentials",
        ),
        (body(&code, "\\", marie, &key), 401, "invalid_credentials"),
        (
            body(&code, "mdupont\0", marie, &key),
            401,
            "invalid_credentials",
        ),
        (
            body(&code, "mdupont", "*", &key),
            401,
            "invalid_credentials",
        ),
        (
            body("AAAA-BBBB-CCCC", "mdupont", marie, &key),
            404,
            "invalid_code",
        ),
        (body("*", "mdupont", marie, &key), 404, "invalid_code"),
        (
            body(&code_sb, "mdupont", marie, &key),
            403,
            "code_wrong_user",
        ),
        (
            body(&code, "mdupont", marie, "not base64!"),
            400,
            "invalid_public_key",
        ),
        (
            body(&code, "mdupont", marie, &b64(&[1u8; 31])),
            400,
            "invalid_public_key",
        ),
        (
            body(&code, "mdupont", marie, &b64(&[0u8; 32])),
            400,
            "invalid_public_key",
        ),
        (
            body(&code, "mdupont", marie, &b64(&GATEWAY_KEY)),
            400,
            "invalid_public_key",
        ),
        // A right password without VPN access answers like a wrong one (no password oracle).
        (
            body(&code, "pdurand", password_of("pdurand"), &key),
            401,
            "invalid_credentials",
        ),
        (
            json!({"code": code, "username": "mdupont", "password": marie, "public_key": key, "hostname": ""}),
            400,
            "bad_request",
        ),
        (
            json!({"code": code, "username": "mdupont", "password": marie, "public_key": key, "hostname": "pc", "admin": true}),
            400,
            "bad_request",
        ),
        (json!({"code": code}), 400, "bad_request"),
    ];
    for (i, (b, status, expected)) in cases.into_iter().enumerate() {
        let r = post(b.clone()).await;
        assert_eq!(
            error_of(r).await,
            (status, expected.to_string()),
            "case {i}: {b}"
        );
        assert_eq!(h.device_count().await, 0, "case {i} wrote a device");
    }
    // A disabled account is refused like a wrong password (no oracle on the account's state).
    let (status, code_name) =
        error_of(post(body(&code, "rmoreau", password_of("rmoreau"), &key)).await).await;
    assert_eq!((status, code_name.as_str()), (401, "invalid_credentials"));

    // Malformed JSON, wrong content type, oversized body.
    let r = c
        .post(h.url("/api/v1/enrol"))
        .header("content-type", "application/json")
        .body("{\"code\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "invalid_json".into()));
    let r = c
        .post(h.url("/api/v1/enrol"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "invalid_json".into()));
    let huge = json!({"code": code, "username": "mdupont", "password": "x".repeat(20 * 1024), "public_key": key, "hostname": "pc"});
    assert_eq!(
        error_of(post(huge).await).await,
        (413, "payload_too_large".into())
    );
    assert_eq!(h.device_count().await, 0);

    // The code still works for its owner after all that; then a duplicate key is refused.
    let r = h.enrol(&code, "mdupont", &key).await;
    assert_eq!(r.status(), 201);
    let r = h.enrol(&code_sb, "sbernard", &key).await;
    assert_eq!(error_of(r).await, (409, "public_key_in_use".into()));
    assert_eq!(h.device_count().await, 1);

    // Rejections were audited as enrol.rejected, without secrets.
    let rejected = audit_of(&h.store, "enrol.rejected").await;
    assert!(rejected.len() >= 15, "{}", rejected.len());
    for e in &rejected {
        assert!(!e.details.to_string().contains(marie), "password in audit");
    }
    // Hostile strings (NUL, LDAP metacharacters) in audit rows keep the chain verifiable.
    assert!(
        matches!(
            h.store.verify_audit().await.unwrap(),
            sesame::audit::AuditVerification::Intact { .. }
        ),
        "audit chain broken by hostile input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_code_is_refused() {
    let h = Harness::start_lenient().await;
    let it = h.login("tleroux").await;
    let r = it
        .post_json(
            "/api/v1/enrolment-codes",
            &json!({"username": "sbernard", "device_name": "pc", "ttl": "1m"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let code = r.json::<Value>().await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    // Age the code in the database (the store compares expires_at with now).
    sqlx::query("UPDATE enrolment_codes SET expires_at = 1")
        .execute(h.store.pool())
        .await
        .unwrap();
    let (key, _) = laptop_key();
    assert_eq!(
        error_of(h.enrol(&code, "sbernard", &key).await).await,
        (410, "code_expired".into())
    );
    assert_eq!(h.device_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_down_is_503_within_5s_and_database_down_is_503() {
    let h = Harness::start_lenient().await;
    // A fresh browser per attempt (no session cookie carried over).
    let login = |uid: &'static str| {
        let c = h.browser();
        async move { c.login(uid).await }
    };
    // Port closed.
    h.slapd.stop();
    let t = Instant::now();
    assert_eq!(
        error_of(login("mdupont").await).await,
        (503, "directory_unavailable".into())
    );
    let closed = t.elapsed();
    // Hung server (accepts, never answers).
    h.slapd.start_again();
    h.slapd.pause();
    let t = Instant::now();
    assert_eq!(
        error_of(login("sbernard").await).await,
        (503, "directory_unavailable".into())
    );
    let hung = t.elapsed();
    eprintln!("directory down → 503 in {closed:?} (port closed), {hung:?} (hung)");
    assert!(hung < Duration::from_secs(5), "{hung:?}");
    h.slapd.resume();
    assert_eq!(login("mdupont").await.status(), 200);

    // Database down: readyz and logins answer 503 database_unavailable.
    assert_eq!(reqwest::get(h.url("/readyz")).await.unwrap().status(), 200);
    h.store.close().await;
    let r = reqwest::get(h.url("/readyz")).await.unwrap();
    assert_eq!(error_of(r).await, (503, "database_unavailable".into()));
    assert_eq!(
        error_of(login("mdupont").await).await,
        (503, "database_unavailable".into())
    );
    assert_eq!(reqwest::get(h.url("/healthz")).await.unwrap().status(), 200);
    // Fail-static: the control plane keeps the last published set.
    let before = h.sink.last.lock().clone();
    assert!(h.control.reconcile().await.is_err());
    assert_eq!(*h.sink.last.lock(), before);
    assert!(h.control.is_stale());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_sync_updates_grants_and_revokes_leavers() {
    let h = Harness::start_lenient().await;
    let it = h.login("tleroux").await;
    let (k_marie, kb_marie) = laptop_key();
    let (k_sophie, kb_sophie) = laptop_key();
    let code = h.code_for(&it, "mdupont", "pm").await;
    assert_eq!(h.enrol(&code, "mdupont", &k_marie).await.status(), 201);
    let code = h.code_for(&it, "sbernard", "ps").await;
    let r = h.enrol(&code, "sbernard", &k_sophie).await;
    let sophie_token = r.json::<Value>().await.unwrap()["device_token"]
        .as_str()
        .unwrap()
        .to_string();
    let rh: std::net::IpAddr = "198.18.20.10".parse().unwrap();
    assert!(!h.sink.peer(&kb_marie).unwrap().rules.allows(rh, 6, 443));

    // Directory down during a sync: nothing changes (fail-static).
    h.slapd.stop();
    assert!(h.sync().sync_once().await.is_err());
    assert!(h.sink.peer(&kb_sophie).is_some());
    h.slapd.start_again();

    // Marie joins HR, Sophie leaves the VPN users.
    h.slapd.add_to_group("mdupont", "gestionnaires-rh");
    h.slapd
        .remove_from_group("sbernard", "personnels-administratifs");
    let report = h.sync().sync_once().await.unwrap();
    // The two device owners, and tleroux: signed in, so re-read too (sessions follow groups).
    assert_eq!(report.checked, 3);
    assert_eq!(report.devices_suspended, 1);
    assert!(h.sink.peer(&kb_marie).unwrap().rules.allows(rh, 6, 443));
    assert!(h.sink.peer(&kb_sophie).is_none());
    let r = reqwest::Client::new()
        .get(h.url("/api/v1/device/config"))
        .bearer_auth(&sophie_token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (403, "device_suspended".into()));
    let sync_events = audit_of(&h.store, "directory.sync").await;
    assert_eq!(sync_events.len(), 1);
    assert_eq!(sync_events[0].details["devices_suspended"], 1);
    let revoked = audit_of(&h.store, "device.suspended").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].actor, "system");

    // An identical peer set is not re-sent to the gateway.
    let before = *h.sink.publications.lock();
    h.control.reconcile().await.unwrap();
    assert_eq!(*h.sink.publications.lock(), before);

    // A device whose key expired is revoked (device.expired) and its peer removed.
    let it2 = h.login("tleroux").await;
    let code = h.code_for(&it2, "hlefevre", "ph").await;
    let (k_h, kb_h) = laptop_key();
    assert_eq!(h.enrol(&code, "hlefevre", &k_h).await.status(), 201);
    assert!(h.sink.peer(&kb_h).is_some());
    sqlx::query("UPDATE devices SET expires_at = 1 WHERE username = 'hlefevre'")
        .execute(h.store.pool())
        .await
        .unwrap();
    assert_eq!(h.control.expire_devices().await.unwrap(), 1);
    h.control.reconcile().await.unwrap();
    assert!(h.sink.peer(&kb_h).is_none());

    // A disabled user loses their devices too (suspended).
    h.slapd.disable_user("mdupont");
    let report = h.sync().sync_once().await.unwrap();
    assert_eq!(report.devices_suspended, 1);
    assert!(h.sink.keys().is_empty());
    // Sync suspensions are counted (expiry is not a revocation).
    let m = h.metrics.render();
    assert!(m.contains("sesame_device_suspensions_total 2"), "{m}");
    assert!(m.contains("sesame_revocations_total 0"), "{m}");
    let _ = (PAIE_NET, RH_NET);
}

/// `sesame devices revoke` (another process, same database) reaches the running control plane
/// through its devices-table poll, without any wake-up from the portal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revocation_reaches_the_gateway_within_a_poll() {
    let h = Harness::start_lenient().await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn(std::sync::Arc::clone(&h.control).run(stop_rx));
    let it = h.login("tleroux").await;
    let code = h.code_for(&it, "mdupont", "pm").await;
    let (key, kb) = laptop_key();
    assert_eq!(h.enrol(&code, "mdupont", &key).await.status(), 201);
    let id = h.store.list_devices(None).await.unwrap()[0].id;
    let config = h.dir.path().join("sesame.toml");
    let t = Instant::now();
    let revoke = cli::sesame(&["devices", "revoke", &id.to_string()])
        .config(&config)
        .args(&["--reason", "laptop stolen"]);
    let out = tokio::process::Command::from(revoke.command())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = t.elapsed();
    let mut gone = None;
    for _ in 0..50 {
        if h.sink.peer(&kb).is_none() {
            gone = Some(t.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = gone.expect("CLI revocation not published within 2.5 s");
    eprintln!("CLI revoke: command took {cli:?}, peer removed {gone:?} after it started");
    let _ = stop_tx.send(true);
    publisher.await.unwrap();
}

/// `GET /api/v1/audit/verify` checks the signed checkpoints too: a tail truncated and
/// re-appended (whose hash links are perfect) is reported, with the first bad id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_api_checks_the_signed_checkpoints() {
    use sesame::audit::checkpoint::{AuditKey, CheckpointReason, Sealer};
    use sesame::audit::{Action, AuditContext, NewAuditEvent};
    let h = Harness::start().await;
    let auditor = h.login("cgarnier").await;
    let sealer = Sealer {
        key: AuditKey::load_or_create(&h.config.audit.signing_key_file)
            .unwrap()
            .0,
        file: h.config.audit.checkpoint_file.clone(),
    };
    let ev = |i: i32| {
        NewAuditEvent::new(
            Action::ConfigReloaded,
            &AuditContext::system(),
            format!("n{i}"),
        )
    };
    h.store
        .append_audit_batch(&[ev(1), ev(2), ev(3)])
        .await
        .unwrap();
    let cp = h
        .store
        .checkpoint_audit(&sealer, CheckpointReason::Interval)
        .await
        .unwrap();
    let verify = || async {
        auditor
            .get_at("/api/v1/audit/verify")
            .await
            .json::<Value>()
            .await
            .unwrap()
    };
    let v = verify().await;
    assert_eq!(v["intact"], true, "{v}");
    // Up to the checkpoint event, and the audit.read this request recorded before verifying.
    assert_eq!(v["events"], cp.last_id + 2);

    sqlx::query("DROP TRIGGER audit_events_no_delete")
        .execute(h.store.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE id >= $1")
        .bind(cp.last_id - 1)
        .execute(h.store.pool())
        .await
        .unwrap();
    h.store
        .append_audit_batch(&[ev(8), ev(9), ev(10)])
        .await
        .unwrap();
    let v = verify().await;
    assert_eq!(v["intact"], false, "{v}");
    assert_eq!(v["first_broken"], cp.last_id);
    assert!(v["reason"].as_str().unwrap().contains("rewritten"), "{v}");
}
