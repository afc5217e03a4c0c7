//! Delegated (DSDEN) technicians see their own scope's bulk batches, boards and dashboard
//! figures only; académie-wide IT staff see everything. Real SQLite store, two scopes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::json;

use crate::audit::{Action, AuditContext, NewAuditEvent};
use crate::config::{Config, LiveConfig};
use crate::directory::DirectoryUser;
use crate::key::PublicKey;
use crate::service::codes::{batches, board};
use crate::service::dashboard::dashboard;
use crate::service::{Actor, BoxFuture, GatewayStats, Publisher, ServiceError, Services};
use crate::store::{hash_secret, NewCode, Store, DEFAULT_CODE_TTL};

const DSI: &str = "cn=dsi,ou=groups,dc=ac,dc=fr";
const DSI56: &str = "cn=dsi-dsden56,ou=groups,dc=ac,dc=fr";
const DSI29: &str = "cn=dsi-dsden29,ou=groups,dc=ac,dc=fr";
const STAFF56: &str = "cn=personnels-dsden56,ou=groups,dc=ac,dc=fr";
const STAFF29: &str = "cn=personnels-dsden29,ou=groups,dc=ac,dc=fr";
const AGENTS: &str = "cn=agents,ou=groups,dc=ac,dc=fr";

/// The gateway's own counters, académie-wide.
const GATEWAY_PEERS: u64 = 40;
const GATEWAY_SESSIONS: u64 = 25;

struct Gateway;

impl Publisher for Gateway {
    fn gateway_public_key(&self) -> PublicKey {
        PublicKey::from_bytes([0x42; 32]).unwrap()
    }
    fn gateway_stats(&self) -> GatewayStats {
        GatewayStats {
            peers: GATEWAY_PEERS,
            active_sessions: GATEWAY_SESSIONS,
            ..GatewayStats::default()
        }
    }
    fn publish_now(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

struct World {
    _dir: tempfile::TempDir,
    svc: Services,
    store: Store,
    config: Arc<Config>,
}

impl World {
    fn actor(&self, username: &str, group: &str) -> Actor {
        Actor::resolve(&self.config.roles, username, &[group.to_string()])
    }
}

/// Two DSDENs: alice (56) and bob (29), each with a batch issued by their technician, an
/// enrolled laptop, a session open now (alice) or ended (bob), a refused flow and an enrolment.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = Store::connect(&url).await.unwrap();
    let text = format!(
        r#"[roles]
vpn_users = ["{AGENTS}"]
it_staff = ["{DSI}"]
[[roles.delegated]]
it_staff = "{DSI56}"
scope = "{STAFF56}"
[[roles.delegated]]
it_staff = "{DSI29}"
scope = "{STAFF29}"
"#
    );
    let config = Arc::new(Config::parse(&dir.path().join("sesame.toml"), &text).unwrap());
    let svc = Services::new(LiveConfig::from(Arc::clone(&config)), store.clone())
        .with_publisher(Arc::new(Gateway));
    for (id, user, staff) in [(1, "alice", STAFF56), (2, "bob", STAFF29)] {
        store
            .upsert_user(&DirectoryUser {
                username: user.into(),
                dn: format!("uid={user},dc=ac,dc=fr"),
                display_name: user.into(),
                groups: vec![AGENTS.into(), staff.into()],
                disabled: false,
            })
            .await
            .unwrap();
        let tech = if staff == STAFF56 { "tech56" } else { "tech29" };
        store
            .create_batch(
                &format!("rentree-{user}.csv"),
                &[NewCode {
                    username: user.into(),
                    device_name: "pc".into(),
                    ttl: DEFAULT_CODE_TTL,
                }],
                &AuditContext::new(tech, None),
            )
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO devices (id, username, name, hostname, public_key, tunnel_address, \
             token_hash, created_at) VALUES ($1, $2, 'pc', 'pc', $3, $4, $5, 0)",
        )
        .bind(id)
        .bind(user)
        .bind(crate::key::encode_base64(&[id as u8; 32]))
        .bind(format!("100.64.0.{}", id + 1))
        .bind(hash_secret(&format!("tok-{id}")))
        .execute(store.pool())
        .await
        .unwrap();
        let ctx = AuditContext::new(user, None);
        let who = json!({"device_id": id, "username": user});
        let mut events = vec![
            NewAuditEvent::new(Action::EnrolCompleted, &ctx, format!("device:{id}"))
                .details(who.clone()),
            NewAuditEvent::new(Action::TunnelSessionStarted, &ctx, format!("device:{id}"))
                .details(who.clone()),
            NewAuditEvent::new(Action::FlowDenied, &ctx, format!("device:{id}"))
                .details(json!({"device_id": id, "username": user, "count": 3 * id})),
        ];
        if user == "bob" {
            events.push(
                NewAuditEvent::new(Action::TunnelSessionEnded, &ctx, format!("device:{id}"))
                    .details(json!({"device_id": id, "username": user, "bytes_in": 1000})),
            );
        }
        for ev in events {
            store.append_audit(&ev).await.unwrap();
        }
    }
    World {
        _dir: dir,
        svc,
        store,
        config,
    }
}

#[tokio::test]
async fn each_dsden_technician_sees_only_their_batches_and_boards() {
    let w = world().await;
    let all = batches(&w.svc, &w.actor("tleroux", DSI)).await.unwrap();
    let labels = |bs: &[crate::store::Batch]| -> Vec<String> {
        bs.iter().map(|b| b.label.clone()).collect()
    };
    assert_eq!(labels(&all), ["rentree-bob.csv", "rentree-alice.csv"]);
    let (id_alice, id_bob) = (all[1].id, all[0].id);

    let tech56 = w.actor("tech56", DSI56);
    let tech29 = w.actor("tech29", DSI29);
    let mine = batches(&w.svc, &tech56).await.unwrap();
    assert_eq!(labels(&mine), ["rentree-alice.csv"]);
    assert_eq!(mine[0].created_by, "tech56");
    assert_eq!(
        labels(&batches(&w.svc, &tech29).await.unwrap()),
        ["rentree-bob.csv"]
    );

    // Their own board opens; the other DSDEN's is unknown, as a batch that does not exist.
    let b = board(&w.svc, &tech56, id_alice).await.unwrap();
    assert_eq!(b.rows.len(), 1);
    assert_eq!(b.rows[0].0.username, "alice");
    for (actor, id) in [(&tech56, id_bob), (&tech29, id_alice), (&tech56, 999)] {
        assert!(matches!(
            board(&w.svc, actor, id).await,
            Err(ServiceError::NotFound)
        ));
    }
    // The académie-wide staff open both.
    for id in [id_alice, id_bob] {
        board(&w.svc, &w.actor("tleroux", DSI), id).await.unwrap();
    }

    // A batch mixing both DSDENs (issued by the académie) belongs to neither technician.
    w.store
        .create_batch(
            "academie.csv",
            &[
                NewCode {
                    username: "alice".into(),
                    device_name: "pc2".into(),
                    ttl: DEFAULT_CODE_TTL,
                },
                NewCode {
                    username: "bob".into(),
                    device_name: "pc2".into(),
                    ttl: DEFAULT_CODE_TTL,
                },
            ],
            &AuditContext::new("tleroux", None),
        )
        .await
        .unwrap();
    assert_eq!(
        labels(&batches(&w.svc, &tech56).await.unwrap()),
        ["rentree-alice.csv"]
    );
    assert_eq!(
        batches(&w.svc, &w.actor("tleroux", DSI))
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn dashboard_figures_cover_the_technicians_scope_only() {
    let w = world().await;
    let wide = dashboard(&w.svc, &w.actor("tleroux", DSI)).await.unwrap();
    assert_eq!(
        (wide.connected_now, wide.peers),
        (GATEWAY_SESSIONS, GATEWAY_PEERS)
    );
    let sum = |v: &[u64]| v.iter().sum::<u64>();
    assert_eq!(sum(&wide.sessions_per_hour), 2);
    assert_eq!(sum(&wide.denied_per_hour), 3 + 6);
    assert_eq!(sum(&wide.bytes_per_hour), 1000);
    assert_eq!(sum(&wide.enrolments_per_day), 2);

    let d56 = dashboard(&w.svc, &w.actor("tech56", DSI56)).await.unwrap();
    assert_eq!(
        (d56.connected_now, d56.peers),
        (1, 1),
        "alice's laptop, connected"
    );
    assert_eq!(sum(&d56.sessions_per_hour), 1);
    assert_eq!(sum(&d56.denied_per_hour), 3);
    assert_eq!(sum(&d56.bytes_per_hour), 0);
    assert_eq!(sum(&d56.enrolments_per_day), 1);

    let d29 = dashboard(&w.svc, &w.actor("tech29", DSI29)).await.unwrap();
    assert_eq!(
        (d29.connected_now, d29.peers),
        (0, 1),
        "bob's session ended"
    );
    assert_eq!(sum(&d29.sessions_per_hour), 1);
    assert_eq!(sum(&d29.denied_per_hour), 6);
    assert_eq!(sum(&d29.bytes_per_hour), 1000);
    assert_eq!(sum(&d29.enrolments_per_day), 1);
}
