//! Directory safety against a real slapd, a real SQLite file and the real portal: absences are
//! confirmed over several syncs, a pass over `max_changes_per_sync` applies nothing and waits
//! for `sesame directory sync --apply`, leavers' devices are suspended and come back without a
//! new enrolment within `suspend_grace`, then are revoked.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common::cli::{self, text};
use crate::common::harness;
use crate::common::store_db::audit_of;

use std::sync::Arc;

use harness::{error_of, laptop_key, Harness};
use serde_json::Value;
use sesame::control::{DirectorySync, ABSENCE_CONFIRMATIONS};
use sesame::directory::LdapDirectory;
use sesame::store::{AuditFilter, DeviceStatus};

/// The fixture's people branch, and a branch that exists but holds no person: a wrong
/// `user_base`, as an operator typo or a directory reorganisation would leave it.
const PEOPLE: &str = "ou=people,dc=academie,dc=test";
const WRONG_BASE: &str = "ou=groups,dc=academie,dc=test";

/// An enrolled laptop: its key and bearer token.
struct Laptop {
    key: sesame::key::PublicKey,
    token: String,
}

async fn enrol(h: &Harness, it: &reqwest::Client, uid: &str, name: &str) -> Laptop {
    let code = h.code_for(it, uid, name).await;
    let (k64, key) = laptop_key();
    let r = h.enrol(&code, uid, &k64).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    Laptop {
        key,
        token: v["device_token"].as_str().unwrap().to_string(),
    }
}

async fn config_status(h: &Harness, token: &str) -> u16 {
    reqwest::Client::new()
        .get(h.url("/api/v1/device/config"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn audit_count(h: &Harness, action: &str) -> usize {
    h.store
        .list_audit(&AuditFilter {
            action: Some(action.into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .len()
}

/// The harness's configuration file with another `user_base`.
fn config_with_base(h: &Harness, base: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(h.dir.path().join("sesame.toml")).unwrap();
    let from = format!("user_base = \"{PEOPLE}\"");
    assert!(text.contains(&from));
    let path = h.dir.path().join("wrong-base.toml");
    std::fs::write(
        &path,
        text.replace(&from, &format!("user_base = \"{base}\"")),
    )
    .unwrap();
    path
}

fn sesame_cli(args: &[&str]) -> (bool, String, String) {
    let out = cli::sesame(args).output();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_user_base_suspends_nothing_and_reports_the_hold() {
    let h = Harness::start_lenient().await;
    let it = h.login("tleroux").await;
    // 12 laptops: over the default limit (5% of 12, at least 10).
    let mut laptops = Vec::new();
    for uid in ["mdupont", "fnoel", "sbernard", "tleroux"] {
        for n in 0..3 {
            laptops.push(enrol(&h, &it, uid, &format!("pc-{uid}-{n}")).await);
        }
    }
    assert_eq!(h.sink.keys().len(), 12);

    // The same directory read through a wrong user_base: every person is missing.
    let mut wrong = h.config.directory.clone().unwrap();
    wrong.user_base = WRONG_BASE.into();
    let sync = DirectorySync::new(
        h.store.clone(),
        Arc::new(LdapDirectory::new(&wrong).unwrap()),
        Some(Arc::clone(&h.control)),
        h.config.roles.vpn_users.clone(),
        &wrong,
        Arc::clone(&h.metrics),
    );
    // Absence is only counted until it is confirmed...
    for pass in 1..ABSENCE_CONFIRMATIONS {
        let r = sync.sync_once().await.unwrap();
        assert_eq!((r.held, r.devices_suspended), (false, 0), "pass {pass}");
        assert_eq!(h.sink.keys().len(), 12);
    }
    // ...then the suspensions it would cause are over the limit: nothing is applied, twice.
    for _ in 0..2 {
        let r = sync.sync_once().await.unwrap();
        assert!(r.held);
        assert_eq!((r.planned_suspensions, r.limit), (12, 10));
        assert_eq!(r.devices_suspended, 0);
        assert_eq!(h.sink.keys().len(), 12);
    }
    for l in &laptops {
        assert_eq!(config_status(&h, &l.token).await, 200);
    }
    // Reported: one audit event for the persisting hold, a metric per held pass.
    assert_eq!(audit_count(&h, "directory.sync_held").await, 1);
    assert_eq!(audit_count(&h, "device.suspended").await, 0);
    let m = h.metrics.render();
    assert!(m.contains("sesame_directory_sync_held_total 2"), "{m}");

    // The operator looks: --dry-run lists the changes and writes nothing.
    let wrong_config = config_with_base(&h, WRONG_BASE);
    let cfg = wrong_config.to_str().unwrap();
    let (ok, out, err) = sesame_cli(&["directory", "sync", "--config", cfg, "--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("12 device(s) to suspend (limit 10 of 12 active)"),
        "{out}"
    );
    assert!(out.contains("suspend 3 device(s) of mdupont"), "{out}");
    assert!(out.contains("--apply"), "{out}");
    assert_eq!(audit_count(&h, "device.suspended").await, 0);
    let (ok, _, err) = sesame_cli(&["directory", "sync", "--config", cfg]);
    assert!(!ok, "--dry-run or --apply is required");
    assert!(err.contains("--apply"), "{err}");

    // The directory fixed, the next pass finds everyone again: nothing held, nothing cut.
    let r = h.sync().sync_once().await.unwrap();
    assert_eq!((r.held, r.devices_suspended, r.checked), (false, 0, 4));
    for u in h.store.users_with_active_devices().await.unwrap() {
        assert_eq!(u.missing_syncs, 0, "{}", u.username);
    }

    // --apply confirms even over the limit (here, the wrong base confirmed on purpose): every
    // device is suspended, then the right directory brings them all back, same keys.
    for _ in 1..ABSENCE_CONFIRMATIONS {
        sync.sync_once().await.unwrap();
    }
    let (ok, out, err) = sesame_cli(&["directory", "sync", "--config", cfg, "--apply"]);
    assert!(ok, "{err}");
    assert!(out.contains("12 device(s) suspended"), "{out}");
    h.control.reconcile().await.unwrap();
    assert!(h.sink.keys().is_empty());
    assert_eq!(config_status(&h, &laptops[0].token).await, 403);
    let r = h.sync().sync_once().await.unwrap();
    assert_eq!((r.held, r.devices_restored), (false, 12));
    let mut keys = h.sink.keys();
    keys.sort();
    let mut want: Vec<sesame::key::PublicKey> = laptops.iter().map(|l| l.key).collect();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(audit_count(&h, "device.restored").await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_removed_then_restored_within_grace_comes_back_without_enrolling() {
    let h = Harness::start_lenient().await;
    let it = h.login("tleroux").await;
    let sophie = enrol(&h, &it, "sbernard", "ps").await;
    let helene = enrol(&h, &it, "hlefevre", "ph").await;

    // Sophie leaves the VPN users: suspended at once, peer removed, token refused.
    h.slapd
        .remove_from_group("sbernard", "personnels-administratifs");
    let r = h.sync().sync_once().await.unwrap();
    assert_eq!((r.devices_suspended, r.devices_restored), (1, 0));
    assert!(h.sink.peer(&sophie.key).is_none());
    assert!(h.sink.peer(&helene.key).is_some());
    let r = reqwest::Client::new()
        .get(h.url("/api/v1/device/config"))
        .bearer_auth(&sophie.token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (403, "device_suspended".into()));
    let d = &h.store.list_devices(Some("sbernard")).await.unwrap()[0];
    assert_eq!(d.status, DeviceStatus::Suspended);
    assert_eq!(audit_count(&h, "device.suspended").await, 1);
    // A second pass changes nothing more.
    let r = h.sync().sync_once().await.unwrap();
    assert_eq!((r.devices_suspended, r.devices_restored), (0, 0));

    // She comes back: the same device, same key and same token work again.
    h.slapd
        .add_to_group("sbernard", "personnels-administratifs");
    let r = h.sync().sync_once().await.unwrap();
    assert_eq!((r.devices_suspended, r.devices_restored), (0, 1));
    let peer = h.sink.peer(&sophie.key).expect("peer restored");
    assert_eq!(peer.address, d.tunnel_address);
    assert_eq!(config_status(&h, &sophie.token).await, 200);
    let events = audit_of(&h.store, "device.restored").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "system");
    assert_eq!(events[0].target, format!("device:{}", d.id));

    // Past the grace, a suspension becomes a revocation: returning no longer helps.
    h.slapd
        .remove_from_group("sbernard", "personnels-administratifs");
    h.sync().sync_once().await.unwrap();
    sqlx::query("UPDATE devices SET suspended_at = 1 WHERE username = 'sbernard'")
        .execute(h.store.pool())
        .await
        .unwrap();
    h.slapd
        .add_to_group("sbernard", "personnels-administratifs");
    let r = h.sync().sync_once().await.unwrap();
    assert_eq!((r.devices_revoked, r.devices_restored), (1, 0));
    assert!(h.sink.peer(&sophie.key).is_none());
    let r = reqwest::Client::new()
        .get(h.url("/api/v1/device/config"))
        .bearer_auth(&sophie.token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (403, "device_revoked".into()));

    // IT revocation of a suspended device is final too.
    h.slapd.disable_user("hlefevre");
    h.sync().sync_once().await.unwrap();
    let id = h.store.list_devices(Some("hlefevre")).await.unwrap()[0].id;
    let r = it
        .delete(h.url(&format!("/api/v1/devices/{id}")))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    h.slapd.enable_user("hlefevre");
    let r = h.sync().sync_once().await.unwrap();
    assert_eq!(r.devices_restored, 0);
    assert!(h.sink.peer(&helene.key).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_user_is_suspended_only_after_consecutive_absences() {
    let h = Harness::start_lenient().await;
    let it = h.login("tleroux").await;
    let sophie = enrol(&h, &it, "sbernard", "ps").await;

    // Missing once, then back: the count starts again.
    h.slapd.delete_user("sbernard");
    let r = h.sync().sync_once().await.unwrap();
    assert_eq!(r.devices_suspended, 0);
    let u = h.store.user("sbernard").await.unwrap().unwrap();
    assert_eq!(u.missing_syncs, 1);
    h.slapd
        .add_user("sbernard", "Sophie Bernard", "x-Sophie-2026");
    h.slapd
        .add_to_group("sbernard", "personnels-administratifs");
    h.sync().sync_once().await.unwrap();
    assert_eq!(
        h.store
            .user("sbernard")
            .await
            .unwrap()
            .unwrap()
            .missing_syncs,
        0
    );

    // Gone for good: only the third consecutive absence suspends.
    h.slapd.delete_user("sbernard");
    for _ in 1..ABSENCE_CONFIRMATIONS {
        let r = h.sync().sync_once().await.unwrap();
        assert_eq!(r.devices_suspended, 0);
        assert!(h.sink.peer(&sophie.key).is_some());
    }
    let r = h.sync().sync_once().await.unwrap();
    assert_eq!(r.devices_suspended, 1);
    assert!(h.sink.peer(&sophie.key).is_none());
}
