//! The portal's store-backed API on PostgreSQL (a throwaway cluster) with a real slapd: the
//! same journey as on SQLite, plus refusals that must leave nothing written.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::harness;

use harness::{error_of, laptop_key, Harness};
use serde_json::{json, Value};
use sesame::service::ratelimit::FailureLimiter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_rotate_revoke_and_sync_on_postgresql() {
    let db = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .unwrap();
    let h = Harness::start_with(Some(db.url.clone()), FailureLimiter::new()).await;
    assert_eq!(h.store.backend(), sesame::store::Backend::Postgres);
    let it = h.login("tleroux").await;
    let code_m = h.code_for(&it, "mdupont", "pm").await;
    let code_s = h.code_for(&it, "sbernard", "ps").await;

    // Refusals write nothing.
    let (k_m, kb_m) = laptop_key();
    assert_eq!(
        error_of(h.enrol(&code_s, "mdupont", &k_m).await).await,
        (403, "code_wrong_user".into())
    );
    assert_eq!(h.device_count().await, 0);

    let r = h.enrol(&code_m, "mdupont", &k_m).await;
    assert_eq!(r.status(), 201);
    let cfg: Value = r.json().await.unwrap();
    assert_eq!(cfg["tunnel_address"], "100.64.0.2");
    let token = cfg["device_token"].as_str().unwrap().to_string();
    assert!(h.sink.peer(&kb_m).is_some());
    // Same key for another device: 409, nothing written.
    assert_eq!(
        error_of(h.enrol(&code_s, "sbernard", &k_m).await).await,
        (409, "public_key_in_use".into())
    );
    assert_eq!(h.device_count().await, 1);
    let (k_s, kb_s) = laptop_key();
    assert_eq!(h.enrol(&code_s, "sbernard", &k_s).await.status(), 201);

    // Rotate.
    let (k2, kb2) = laptop_key();
    let r = reqwest::Client::new()
        .post(h.url("/api/v1/device/rotate"))
        .bearer_auth(&token)
        .json(&json!({"public_key": k2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(h.sink.peer(&kb2).is_some() && h.sink.peer(&kb_m).is_none());

    // Sophie leaves the VPN users: sync suspends her device; she returns: it comes back.
    h.slapd
        .remove_from_group("sbernard", "personnels-administratifs");
    let report = h.sync().sync_once().await.unwrap();
    assert_eq!(report.devices_suspended, 1);
    assert!(h.sink.peer(&kb_s).is_none());
    h.slapd
        .add_to_group("sbernard", "personnels-administratifs");
    let report = h.sync().sync_once().await.unwrap();
    assert_eq!(report.devices_restored, 1);
    assert!(h.sink.peer(&kb_s).is_some());
    h.slapd
        .remove_from_group("sbernard", "personnels-administratifs");
    assert_eq!(h.sync().sync_once().await.unwrap().devices_suspended, 1);
    assert!(h.sink.peer(&kb_s).is_none());

    // IT revokes Marie's device.
    let id = h.store.list_devices(Some("mdupont")).await.unwrap()[0].id;
    let r = it
        .delete(h.url(&format!("/api/v1/devices/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(h.sink.keys().is_empty());

    // The chain holds on PostgreSQL too.
    let auditor = h.login("cgarnier").await;
    let v: Value = auditor
        .get(h.url("/api/v1/audit/verify"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["intact"], true, "{v}");
}
