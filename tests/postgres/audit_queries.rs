//! Audit queries on SQLite AND PostgreSQL: indexed filters over the data-plane event shapes,
//! keyset pages, flows to a resource, the access review, the site filter, the migrations 0003
//! and 0014 (backfills) and 0009 (hash no longer unique) on a log that already holds a chain.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::both_backends;
use crate::common;
use crate::old_database_tests;

use std::net::Ipv4Addr;

use common::audit_events::*;
use common::store_db::*;
use serde_json::json;
use sesame::audit::query::SiteFilter;
use sesame::audit::review::ReviewSubject;
use sesame::audit::AuditVerification;
use sesame::audit::{
    index_keys, Action, AuditContext, AuditFilter, FilterParams, NewAuditEvent, Outcome,
};
use sesame::config::StaticPeer;
use sesame::policy::{Policy, Resource};
use sesame::service::review::{access_review, PageAsk, ReviewPolicy};
use sesame::store::Store;
use sesame::time;

both_backends!(
    filters_find_data_plane_events_by_derived_keys,
    keyset_pages_cover_everything_once,
    flows_sum_a_resource_per_device_in_a_range,
    access_review_says_who_through_which_group_and_grant,
    site_filter_returns_exactly_the_events_of_that_site,
);
old_database_tests!(
    migration_0003_backfills_index_columns_by_the_same_rule,
    migration_0009_keeps_the_chain_and_drops_unique_hash,
    migration_0014_backfills_the_site_column,
);

const MIN: i64 = 60_000;
const PAIE_GROUP: &str = "cn=gestionnaires-paie,ou=groups,dc=example,dc=org";
const RH_GROUP: &str = "cn=gestionnaires-rh,ou=groups,dc=example,dc=org";
const VPN_GROUP: &str = "cn=personnels-administratifs,ou=groups,dc=example,dc=org";

fn ids(events: &[sesame::audit::AuditEvent]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

async fn list(store: &Store, f: AuditFilter) -> Vec<i64> {
    ids(&store.list_audit(&f).await.expect("list"))
}

async fn filters_find_data_plane_events_by_derived_keys(db: Db) {
    let s = &db.store;
    let login = NewAuditEvent::new(
        Action::AuthLogin,
        &AuditContext::new("alice", Some("198.18.0.5".into())),
        "alice",
    );
    let overflow = NewAuditEvent::new(
        Action::AuditOverflow,
        &AuditContext::system(),
        "audit_queue",
    )
    .outcome(Outcome::Failure)
    .details(
        json!({"lost": {"flow.allowed": 3}, "since": time::format(T0), "until": time::format(T0)}),
    );
    let events = [
        (T0, login),                                                    // 1
        (T0 + MIN, session_started(7, "alice", T0 + MIN)),              // 2
        (T0 + 2 * MIN, flow(Some(7), Some("alice"), "paie", T0, 1000)), // 3
        (T0 + 2 * MIN, flow(Some(8), Some("bob"), "paie", T0, 400)),    // 4
        (T0 + 3 * MIN, flow(None, None, "paie", T0, 100)),              // 5 static peer
        (T0 + 3 * MIN, denied(8, "bob", T0)),                           // 6
        (T0 + 4 * MIN, overflow),                                       // 7
        (
            T0 + 5 * MIN,
            session_ended(7, "alice", T0 + MIN, T0 + 5 * MIN),
        ), // 8
    ];
    s.append_audit_bulk(&events).await.expect("bulk");
    let by = |f: AuditFilter| list(s, f);
    assert_eq!(
        by(AuditFilter {
            user: Some("alice".into()),
            ..Default::default()
        })
        .await,
        [1, 2, 3, 8]
    );
    assert_eq!(
        by(AuditFilter {
            user: Some("bob".into()),
            ..Default::default()
        })
        .await,
        [4, 6]
    );
    assert_eq!(
        by(AuditFilter {
            device: Some(7),
            ..Default::default()
        })
        .await,
        [2, 3, 8]
    );
    assert_eq!(
        by(AuditFilter {
            resource: Some("paie".into()),
            ..Default::default()
        })
        .await,
        [3, 4, 5]
    );
    assert_eq!(
        by(AuditFilter {
            outcome: Some(Outcome::Denied),
            ..Default::default()
        })
        .await,
        [6]
    );
    assert_eq!(
        by(AuditFilter {
            outcome: Some(Outcome::Failure),
            ..Default::default()
        })
        .await,
        [7]
    );
    assert_eq!(
        by(AuditFilter {
            source_ip: Some("198.18.0.5".into()),
            ..Default::default()
        })
        .await,
        [1]
    );
    assert_eq!(
        by(AuditFilter {
            resource: Some("paie".into()),
            device: Some(8),
            since: Some(T0 + 2 * MIN),
            until: Some(T0 + 3 * MIN),
            ..Default::default()
        })
        .await,
        [4]
    );
    assert_eq!(
        by(AuditFilter {
            action: Some("tunnel.session_ended".into()),
            user: Some("alice".into()),
            ..Default::default()
        })
        .await,
        [8]
    );
    // The index columns are outside the hashed content: the bulk path chained correctly.
    assert_eq!(
        s.verify_audit().await.expect("verify"),
        AuditVerification::Intact { events: 8 }
    );
    // A single append fills the same columns as the bulk path.
    s.append_audit(&flow(Some(7), Some("alice"), "rh", T0, 10))
        .await
        .expect("append");
    assert_eq!(
        by(AuditFilter {
            resource: Some("rh".into()),
            device: Some(7),
            ..Default::default()
        })
        .await,
        [9]
    );
}

async fn keyset_pages_cover_everything_once(db: Db) {
    let s = &db.store;
    let events: Vec<(i64, NewAuditEvent)> = (0..1_234)
        .map(|i| {
            let who = ["alice", "bob", "carol"][i % 3];
            (
                T0 + i as i64,
                flow(Some((i % 3) as i64 + 1), Some(who), "paie", T0, 100),
            )
        })
        .collect();
    s.append_audit_bulk(&events).await.expect("bulk");
    let filter = AuditFilter {
        user: Some("bob".into()),
        ..Default::default()
    };
    let (mut after, mut seen, mut pages) = (None, Vec::new(), 0);
    loop {
        let (page, next) = s.audit_page(&filter, after, 100).await.expect("page");
        assert!(page.len() <= 100);
        seen.extend(ids(&page));
        pages += 1;
        match next {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    // 411 of the 1,234 events are bob's (i % 3 == 1): 5 pages, none twice, none missing.
    assert_eq!(seen.len(), 411);
    assert_eq!(pages, 5);
    let want: Vec<i64> = (0..1_234).filter(|i| i % 3 == 1).map(|i| i + 1).collect();
    assert_eq!(seen, want);
    // Exactly one page's worth: no empty trailing page is announced.
    let (page, next) = s
        .audit_page(
            &AuditFilter {
                device: Some(1),
                ..Default::default()
            },
            None,
            412,
        )
        .await
        .expect("page");
    assert_eq!((page.len(), next), (412, None));
}

async fn flows_sum_a_resource_per_device_in_a_range(db: Db) {
    let s = &db.store;
    let march = T0; // the range: [T0, T0 + 30 days)
    let end = T0 + 30 * 24 * 60 * MIN;
    let events = [
        (
            march - MIN,
            flow(Some(7), Some("alice"), "paie", march - 2 * MIN, 9_999),
        ), // before
        (
            march + MIN,
            flow(Some(7), Some("alice"), "paie", march, 1_000),
        ),
        (
            march + 2 * MIN,
            flow(Some(8), Some("bob"), "paie", march + MIN, 400),
        ),
        (
            march + 3 * MIN,
            flow(Some(7), Some("alice"), "rh", march + 2 * MIN, 5_000),
        ), // other resource
        (
            march + 4 * MIN,
            flow(Some(7), Some("alice"), "paie", march + 3 * MIN, 2_000),
        ),
        (
            march + 5 * MIN,
            flow(None, None, "paie", march + 4 * MIN, 100),
        ),
        (end, flow(Some(8), Some("bob"), "paie", end, 7_777)), // until is excluded
    ];
    s.append_audit_bulk(&events).await.expect("bulk");
    let flows = s
        .flows("paie", Some(march), Some(end))
        .await
        .expect("flows");
    assert_eq!(flows.len(), 3, "{flows:?}");
    let alice = &flows[0];
    assert_eq!(
        (alice.username.as_deref(), alice.device_id),
        (Some("alice"), Some(7))
    );
    assert_eq!(alice.peer, "device:7:alice");
    assert_eq!(alice.first_seen, march + 1_000);
    assert_eq!(alice.last_seen, march + 3 * MIN + 50_000);
    assert_eq!((alice.bytes, alice.packets, alice.windows), (3_000, 30, 2));
    assert_eq!((alice.bytes_out, alice.bytes_in), (750, 2_250));
    let bob = &flows[1];
    assert_eq!(
        (bob.username.as_deref(), bob.bytes, bob.windows),
        (Some("bob"), 400, 1)
    );
    let peer = &flows[2];
    assert_eq!((peer.username.as_deref(), peer.device_id), (None, None));
    assert_eq!(
        (peer.peer.as_str(), peer.bytes),
        ("static:supervision", 100)
    );
    assert!(s
        .flows("paie", Some(end + MIN), None)
        .await
        .expect("empty")
        .is_empty());
}

/// Events delivered by two site gateways beside `sesame serve`'s own (no site): each site's
/// filter returns exactly its events, `local` exactly those without a site.
async fn site_filter_returns_exactly_the_events_of_that_site(db: Db) {
    let s = &db.store;
    let login = NewAuditEvent::new(
        Action::AuthLogin,
        &AuditContext::new("alice", Some("198.18.0.5".into())),
        "alice",
    );
    let events = [
        (T0, login),                                                   // 1 portal
        (T0 + MIN, session_started(7, "alice", T0 + MIN)),             // 2 local gateway
        (T0 + MIN, at_site(session_started(9, "bob", T0), "dsden56")), // 3
        (
            T0 + 2 * MIN,
            at_site(flow(Some(9), Some("bob"), "app56", T0, 500), "dsden56"),
        ), // 4
        (
            T0 + 2 * MIN,
            at_site(flow(Some(10), Some("carol"), "paie", T0, 700), "rectorat"),
        ), // 5
        (T0 + 3 * MIN, flow(Some(7), Some("alice"), "rh", T0, 100)),   // 6 local gateway
        (
            T0 + 4 * MIN,
            at_site(session_ended(9, "bob", T0, T0 + 4 * MIN), "dsden56"),
        ), // 7
        // A site name differing only in case is another site.
        (
            T0 + 4 * MIN,
            at_site(flow(Some(11), Some("dave"), "app", T0, 1), "DSDEN56"),
        ), // 8
    ];
    s.append_audit_bulk(&events).await.expect("bulk");
    let site = |name: &str| AuditFilter {
        site: Some(SiteFilter::Named(name.into())),
        ..Default::default()
    };
    assert_eq!(list(s, site("dsden56")).await, [3, 4, 7]);
    assert_eq!(list(s, site("rectorat")).await, [5]);
    assert_eq!(list(s, site("DSDEN56")).await, [8]);
    assert_eq!(list(s, site("nowhere")).await, Vec::<i64>::new());
    let local = AuditFilter {
        site: Some(SiteFilter::Local),
        ..Default::default()
    };
    assert_eq!(list(s, local.clone()).await, [1, 2, 6]);
    // With the other filters: one site's flows, the local gateway's flows, a time range.
    let flows = |f: AuditFilter| AuditFilter {
        action: Some(Action::FlowAllowed.as_str().into()),
        ..f
    };
    assert_eq!(list(s, flows(site("dsden56"))).await, [4]);
    assert_eq!(list(s, flows(local)).await, [6]);
    assert_eq!(
        list(
            s,
            AuditFilter {
                since: Some(T0 + 2 * MIN),
                device: Some(9),
                ..site("dsden56")
            }
        )
        .await,
        [4, 7]
    );
    // As the API, the CLI and the pages write it (`local` in any case).
    let params = |v: &str| {
        FilterParams {
            site: Some(v.into()),
            ..FilterParams::default()
        }
        .to_filter(0)
        .expect("filter")
    };
    assert_eq!(list(s, params("dsden56")).await, [3, 4, 7]);
    assert_eq!(list(s, params("LOCAL")).await, [1, 2, 6]);
    // A keyset page of one site's events.
    let (page, next) = s.audit_page(&site("dsden56"), None, 2).await.expect("page");
    assert_eq!((ids(&page), next), (vec![3, 4], Some(4)));
    let (page, next) = s.audit_page(&site("dsden56"), next, 2).await.expect("page");
    assert_eq!((ids(&page), next), (vec![7], None));
}

fn resource(name: &str) -> Resource {
    resource_at(name, "rectorat")
}

fn resource_at(name: &str, site: &str) -> Resource {
    Resource {
        name: name.into(),
        site: site.into(),
        description: name.into(),
        rules: Vec::new(),
    }
}

async fn access_review_says_who_through_which_group_and_grant(db: Db) {
    let s = &db.store;
    let mut alice = person("alice");
    alice.groups.push(PAIE_GROUP.into());
    alice.groups.push(RH_GROUP.into());
    let mut bob = person("bob");
    bob.groups.push(RH_GROUP.into());
    let mut carol = person("carol"); // paie group but not a VPN user any more: no access
    carol.groups = vec![PAIE_GROUP.into()];
    let mut dev = Vec::new();
    for (i, u) in [&alice, &alice, &bob, &carol].into_iter().enumerate() {
        let code = code_for(&db, &u.username, &format!("pc-{i}")).await;
        let k = key(u8::try_from(i + 1).expect("small"));
        dev.push(
            enrol(&db, &code, u, k, "100.64.0.0/24")
                .await
                .expect("enrol")
                .device,
        );
    }
    // Alice's second laptop is revoked: not listed.
    s.revoke_device(dev[1].id, "lost", &it_staff())
        .await
        .expect("revoke");
    // Payroll at the rectorat's gateway, HR behind `sesame serve`'s own (no site).
    let mut policy = Policy::new([resource("paie"), resource_at("rh", "")]);
    policy
        .grant(RH_GROUP, &["rh".to_string()])
        .expect("grant 1");
    policy
        .grant(PAIE_GROUP, &["paie".to_string()])
        .expect("grant 2");
    policy
        .grant(&PAIE_GROUP.to_uppercase(), &["paie".to_string()])
        .expect("grant 3");
    let peers = [StaticPeer {
        name: "supervision".into(),
        public_key: sesame::key::PublicKey::from_bytes([9; 32]).expect("key"),
        address: Ipv4Addr::new(100, 64, 255, 1),
        resources: vec!["paie".into()],
        persistent_keepalive: None,
    }];
    let vpn_users = [VPN_GROUP.to_string()];
    let cfg = ReviewPolicy {
        policy: &policy,
        vpn_users: &vpn_users,
        static_peers: &peers,
    };
    let d0 = dev[0].id;
    s.append_audit_bulk(&[
        (T0, session_started(d0, "alice", T0)),
        (T0 + MIN, flow(Some(d0), Some("alice"), "paie", T0, 1_000)),
        (
            T0 + 2 * MIN,
            flow(Some(d0), Some("alice"), "paie", T0 + MIN, 2_000),
        ),
        (
            T0 + 3 * MIN,
            flow(Some(d0), Some("alice"), "rh", T0 + 2 * MIN, 3_000),
        ),
        (T0 + 4 * MIN, session_ended(d0, "alice", T0, T0 + 4 * MIN)),
    ])
    .await
    .expect("events");

    let review = access_review(
        s,
        &cfg,
        &ReviewSubject::Resource("paie".into()),
        &PageAsk::default(),
    )
    .await
    .expect("review");
    assert_eq!(review.resource.as_deref(), Some("paie"));
    assert_eq!(review.entries.len(), 2, "{:#?}", review.entries);
    let peer = &review.entries[0];
    assert_eq!(
        (peer.device_id, peer.device_name.as_str()),
        (None, "supervision")
    );
    assert!(
        review.entries.iter().all(|e| e.site == "rectorat"),
        "each entry names its resource's site: {:#?}",
        review.entries
    );
    assert_eq!(peer.via[0].peer.as_deref(), Some("supervision"));
    let a = &review.entries[1];
    assert_eq!(
        (a.username.as_deref(), a.device_id),
        (Some("alice"), Some(d0))
    );
    assert_eq!(a.tunnel_address, dev[0].tunnel_address.to_string());
    assert_eq!(a.via.len(), 1);
    assert_eq!(a.via[0].group.as_deref(), Some(PAIE_GROUP));
    assert_eq!(
        a.via[0].grants,
        [2, 3],
        "both [[grant]] sections that give paie"
    );
    let session = a.last_session.as_ref().expect("session");
    assert_eq!(session.action, "tunnel.session_ended");
    assert_eq!(session.at, time::format(T0 + 4 * MIN));
    assert_eq!(session.reason.as_deref(), Some("expired"));
    let last = a.last_flow.as_ref().expect("flow");
    assert_eq!(
        (last.bytes, last.last_seen.as_str()),
        (2_000, time::format(T0 + MIN + 50_000).as_str())
    );

    // The reverse: what alice can reach, and why.
    let review = access_review(
        s,
        &cfg,
        &ReviewSubject::User("alice".into()),
        &PageAsk::default(),
    )
    .await
    .expect("review");
    let got: Vec<(&str, Vec<usize>)> = review
        .entries
        .iter()
        .map(|e| {
            (
                e.resource.as_str(),
                e.via.iter().flat_map(|v| v.grants.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(got, [("paie", vec![2, 3]), ("rh", vec![1])]);
    let sites: Vec<&str> = review.entries.iter().map(|e| e.site.as_str()).collect();
    assert_eq!(
        sites,
        ["rectorat", "local"],
        "a resource without a site: local"
    );
    assert_eq!(
        review.entries[1].last_flow.as_ref().map(|f| f.bytes),
        Some(3_000)
    );
    // Bob reaches rh only; nobody reaches an unknown resource (an error, not an empty list).
    let bob_review = access_review(
        s,
        &cfg,
        &ReviewSubject::User("bob".into()),
        &PageAsk::default(),
    )
    .await
    .expect("bob");
    assert_eq!(bob_review.entries.len(), 1);
    assert_eq!(bob_review.entries[0].last_session, None);
    let e = access_review(
        s,
        &cfg,
        &ReviewSubject::Resource("compta".into()),
        &PageAsk::default(),
    )
    .await
    .expect_err("unknown");
    assert!(e.to_string().contains("compta"), "{e}");

    // By site: every resource of the site, as its resource reviews would list them.
    let rectorat = access_review(
        s,
        &cfg,
        &ReviewSubject::Site("rectorat".into()),
        &PageAsk::default(),
    )
    .await
    .expect("site review");
    assert_eq!(rectorat.site.as_deref(), Some("rectorat"));
    let got: Vec<(&str, &str, Option<i64>)> = rectorat
        .entries
        .iter()
        .map(|e| (e.resource.as_str(), e.site.as_str(), e.device_id))
        .collect();
    assert_eq!(
        got,
        [("paie", "rectorat", None), ("paie", "rectorat", Some(d0))],
        "the static peer and alice's laptop"
    );
    let local = access_review(
        s,
        &cfg,
        &ReviewSubject::Site("local".into()),
        &PageAsk::default(),
    )
    .await
    .expect("local review");
    let got: Vec<(&str, &str, Option<&str>)> = local
        .entries
        .iter()
        .map(|e| (e.resource.as_str(), e.site.as_str(), e.username.as_deref()))
        .collect();
    assert_eq!(
        got,
        [("rh", "local", Some("alice")), ("rh", "local", Some("bob"))]
    );
    assert_eq!(
        local.entries[0].last_flow.as_ref().map(|f| f.bytes),
        Some(3_000)
    );
    let none = access_review(
        s,
        &cfg,
        &ReviewSubject::Site("dsden56".into()),
        &PageAsk::default(),
    )
    .await
    .expect("a site without resources");
    assert!(none.entries.is_empty());
    // The CSV names the site beside the resource.
    let row = sesame::audit::review::review_csv_record(&rectorat.entries[1]);
    assert_eq!((row[0].as_str(), row[1].as_str()), ("paie", "rectorat"));
}

/// The events of the migration tests: one of each shape the index columns care about.
fn migration_samples() -> Vec<NewAuditEvent> {
    vec![
        session_started(7, "alice", T0),
        flow(Some(7), Some("alice"), "paie", T0, 100),
        flow(None, None, "paie", T0, 100),
        denied(8, "bob", T0),
        NewAuditEvent::new(Action::DeviceRevoked, &it_staff(), "device:12")
            .details(json!({"username": "carol", "reason": "lost"})),
        NewAuditEvent::new(Action::AuthLogin, &AuditContext::new("dave", None), "dave"),
        NewAuditEvent::new(Action::DirectorySync, &AuditContext::system(), "directory"),
        at_site(session_started(9, "erin", T0), "dsden56"),
        at_site(flow(Some(9), Some("erin"), "app56", T0, 100), "dsden56"),
        at_site(flow(Some(10), Some("fred"), "paie", T0, 100), "rectorat"),
    ]
}

/// A database at `old_url` with the schema as it was before migration `before` (the earlier
/// migration files, unchanged: same checksums) holding `samples` as a valid chain (ids 1…),
/// written by plain INSERTs; with `index_columns`, the index columns of 0003 too.
async fn old_log(
    old_url: &str,
    flavour: &str,
    dir: &std::path::Path,
    before: &str,
    samples: &[NewAuditEvent],
    index_columns: bool,
) {
    let pool = schema_before(old_url, flavour, dir, before).await;
    let mut prev = sesame::audit::GENESIS_HASH.to_string();
    for (i, ev) in samples.iter().enumerate() {
        let e = chained(ev, i as i64 + 1, T0, &prev);
        prev = e.hash.clone();
        let keys = index_keys(&e.target, &e.details);
        let (columns, values) = if index_columns {
            (", username, device_id, resource", ", $11, $12, $13")
        } else {
            ("", "")
        };
        let sql = format!(
            "INSERT INTO audit_events (id, ts, actor, action, target, outcome, source_ip, details, \
             prev_hash, hash{columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10{values})"
        );
        let mut q = sqlx::query(&sql)
            .bind(e.id)
            .bind(e.ts)
            .bind(e.actor.clone())
            .bind(e.action.clone())
            .bind(e.target.clone())
            .bind(e.outcome.as_str())
            .bind(e.source_ip.clone())
            .bind(sesame::audit::canonical_json(&e.details))
            .bind(e.prev_hash.clone())
            .bind(e.hash.clone());
        if index_columns {
            q = q
                .bind(keys.username)
                .bind(keys.device_id)
                .bind(keys.resource);
        }
        q.execute(&pool).await.expect("old insert");
    }
    pool.close().await;
}

/// Every row's index columns are what [`index_keys`] derives from it.
async fn assert_index_columns(store: &Store, samples: &[NewAuditEvent]) {
    for (i, ev) in samples.iter().enumerate() {
        let want = index_keys(&ev.target, &ev.details);
        type Row = (Option<String>, Option<i64>, Option<String>, Option<String>);
        let row = sqlx::query_as::<_, Row>(
            "SELECT username, device_id, resource, site FROM audit_events WHERE id = $1",
        )
        .bind(i as i64 + 1)
        .fetch_one(store.pool())
        .await
        .expect("row");
        assert_eq!(
            row,
            (want.username, want.device_id, want.resource, want.site),
            "event {}",
            i + 1
        );
    }
}

/// Rows written before migration 0003 get the same index columns as new ones (SQLite and
/// PostgreSQL, whose backfill is its own SQL).
async fn migration_0003_backfills_index_columns_by_the_same_rule(
    old_url: &str,
    url: &str,
    flavour: &str,
    dir: &std::path::Path,
) {
    let samples = migration_samples();
    old_log(old_url, flavour, dir, "0003", &samples, false).await;
    let store = Store::connect(url).await.expect("migrate to 0003");
    assert_index_columns(&store, &samples).await;
    assert_eq!(
        store.verify_audit().await.expect("verify"),
        AuditVerification::Intact {
            events: samples.len() as u64
        }
    );
    // The backfilled columns serve the filters, and the log stays append-only.
    assert_eq!(
        list(
            &store,
            AuditFilter {
                device: Some(12),
                ..Default::default()
            }
        )
        .await,
        [5]
    );
    assert!(
        sqlx::query("UPDATE audit_events SET username = 'x' WHERE id = 1")
            .execute(store.pool())
            .await
            .is_err()
    );
}

/// Migration 0009 rebuilds SQLite's audit table without UNIQUE(hash): a log that already holds
/// a chain keeps every event, its index columns, its triggers, and still verifies.
async fn migration_0009_keeps_the_chain_and_drops_unique_hash(
    old_url: &str,
    url: &str,
    flavour: &str,
    dir: &std::path::Path,
) {
    let samples = migration_samples();
    old_log(old_url, flavour, dir, "0009", &samples, true).await;
    let store = Store::connect(url).await.expect("migrate to 0009");
    assert_index_columns(&store, &samples).await;
    let n = samples.len() as i64;
    assert_eq!(
        store.verify_audit().await.expect("verify"),
        AuditVerification::Intact { events: n as u64 }
    );
    // The hash is no longer a unique key: a row repeating event 1's hash is accepted by the
    // database (refused before 0009), and left to `audit verify` (rolled back here).
    let first_hash: String = sqlx::query_scalar("SELECT hash FROM audit_events WHERE id = 1")
        .fetch_one(store.pool())
        .await
        .expect("hash");
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO audit_events (id, ts, actor, action, target, outcome, source_ip, details, \
         prev_hash, hash) VALUES ($1, $2, 'mallory', 'auth.login', 'mallory', 'success', NULL, \
         '{}', $3, $3)",
    )
    .bind(n + 1)
    .bind(T0)
    .bind(&first_hash)
    .execute(&mut *tx)
    .await
    .expect("a repeated hash is no longer refused by the schema");
    tx.rollback().await.expect("rollback");
    // The append goes on from the migrated chain, which stays append-only.
    let next = store
        .append_audit(&flow(Some(7), Some("alice"), "paie", T0, 100))
        .await
        .expect("append after 0009");
    assert_eq!(next.id, n + 1);
    assert_eq!(
        store.verify_audit().await.expect("verify"),
        AuditVerification::Intact {
            events: n as u64 + 1
        }
    );
    assert_eq!(
        list(
            &store,
            AuditFilter {
                device: Some(7),
                ..Default::default()
            }
        )
        .await,
        [1, 2, n + 1]
    );
    for statement in [
        "UPDATE audit_events SET actor = 'x' WHERE id = 1",
        "DELETE FROM audit_events WHERE id = 1",
    ] {
        assert!(
            sqlx::query(statement).execute(store.pool()).await.is_err(),
            "{statement} must still be refused"
        );
    }
}

/// Rows written before migration 0014 (with the index columns of 0003) get the site column by
/// the same rule as new ones, and the site filter finds them (SQLite and PostgreSQL).
async fn migration_0014_backfills_the_site_column(
    old_url: &str,
    url: &str,
    flavour: &str,
    dir: &std::path::Path,
) {
    let samples = migration_samples();
    old_log(old_url, flavour, dir, "0014", &samples, true).await;
    let store = Store::connect(url).await.expect("migrate to 0014");
    assert_index_columns(&store, &samples).await;
    let n = samples.len() as i64;
    assert_eq!(
        store.verify_audit().await.expect("verify"),
        AuditVerification::Intact { events: n as u64 }
    );
    let site = |name: &str| AuditFilter {
        site: Some(SiteFilter::Named(name.into())),
        ..Default::default()
    };
    assert_eq!(list(&store, site("dsden56")).await, [n - 2, n - 1]);
    assert_eq!(list(&store, site("rectorat")).await, [n]);
    let local = AuditFilter {
        site: Some(SiteFilter::Local),
        ..Default::default()
    };
    assert_eq!(list(&store, local).await, (1..n - 2).collect::<Vec<_>>());
    // New events get the column from the append; the log stays append-only.
    let next = store
        .append_audit(&at_site(
            flow(Some(9), Some("erin"), "app56", T0, 100),
            "dsden56",
        ))
        .await
        .expect("append after 0014");
    assert_eq!(list(&store, site("dsden56")).await, [n - 2, n - 1, next.id]);
    for statement in [
        "UPDATE audit_events SET site = 'x' WHERE id = 1",
        "DELETE FROM audit_events WHERE id = 1",
    ] {
        assert!(
            sqlx::query(statement).execute(store.pool()).await.is_err(),
            "{statement} must still be refused"
        );
    }
}
