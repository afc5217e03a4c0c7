//! The access review reads only its subject's devices, a page at a time, on SQLite AND
//! PostgreSQL: its answer must be the very answer of the full read it replaced (every active
//! device with its user, the rule applied to all), for every subject, whole or page by page.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::both_backends;
use crate::common;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use common::audit_events::*;
use common::store_db::*;
use sesame::audit::review::{
    FactorSeen, FlowSeen, Review, ReviewCursor, ReviewEntry, ReviewSubject, SessionSeen, Via,
};
use sesame::config::StaticPeer;
use sesame::directory::DirectoryUser;
use sesame::policy::{Policy, Resource};
use sesame::service::review::{
    access_review, access_review_counted, reachable, resource_site, PageAsk, ReviewCounts,
    ReviewPolicy,
};
use sesame::store::{normalize_username, Store};

both_backends!(
    each_subjects_review_is_the_full_reads_review,
    pages_cover_the_review_once_in_order,
    a_kept_count_follows_every_change_of_the_peer_set,
);

const MIN: i64 = 60_000;
const VPN: &str = "cn=personnels,ou=groups,dc=example,dc=org";
const PAIE: &str = "cn=gestionnaires-paie,ou=groups,dc=example,dc=org";
const RH: &str = "cn=gestionnaires-rh,ou=groups,dc=example,dc=org";
/// A nested group: its members are in `RH` too, as the directory resolves them.
const RH_PARIS: &str = "cn=rh-paris,cn=gestionnaires-rh,ou=groups,dc=example,dc=org";
const INTRANET: &str = "cn=intranet,ou=groups,dc=example,dc=org";

fn resource(name: &str, site: &str) -> Resource {
    Resource {
        name: name.into(),
        site: site.into(),
        description: name.into(),
        rules: Vec::new(),
    }
}

fn user(name: &str, groups: &[&str]) -> DirectoryUser {
    DirectoryUser {
        groups: groups.iter().map(|g| (*g).to_string()).collect(),
        ..person(name)
    }
}

/// The configuration of these tests: `paie` and `rh` at the rectorat (paie granted twice,
/// once with its DN written in capitals), `intranet` at dsden56, `annuaire` behind `sesame
/// serve` (granted to the nested group), `vide` granted to nobody; two static peers.
fn config() -> (Policy, Vec<String>, Vec<StaticPeer>) {
    let mut policy = Policy::new([
        resource("paie", "rectorat"),
        resource("rh", "rectorat"),
        resource("intranet", "dsden56"),
        resource("annuaire", ""),
        resource("vide", ""),
    ]);
    for (group, names) in [
        (RH, vec!["rh"]),
        (PAIE, vec!["paie"]),
        (&PAIE.to_uppercase(), vec!["paie", "intranet"]),
        (INTRANET, vec!["intranet"]),
        (RH_PARIS, vec!["annuaire"]),
    ] {
        let names: Vec<String> = names.into_iter().map(str::to_string).collect();
        policy.grant(group, &names).expect("grant");
    }
    policy.require_mfa("paie").expect("mfa");
    let peer = |name: &str, n: u8, resources: &[&str]| StaticPeer {
        name: name.into(),
        public_key: sesame::key::PublicKey::from_bytes([n; 32]).expect("key"),
        address: Ipv4Addr::new(100, 64, 255, n),
        resources: resources.iter().map(|r| (*r).to_string()).collect(),
        persistent_keepalive: None,
    };
    let peers = vec![
        peer("supervision", 1, &["paie", "rh"]),
        peer("sauvegarde", 2, &["annuaire"]),
        peer("imprimante", 3, &["paie"]),
    ];
    (policy, vec![VPN.to_uppercase()], peers)
}

/// Users of every kind and their devices (active, revoked, suspended, several per user),
/// sessions, flows and factors. Returns the uids.
async fn fill(db: &Db) -> Vec<String> {
    let s = &db.store;
    let people = [
        user("alice", &[VPN, PAIE, RH]),
        user("bob", &[VPN, RH, RH_PARIS]),
        // paie through a DN spelled otherwise (case, spaces): the same group.
        user(
            "carol",
            &[VPN, "CN=Gestionnaires-Paie, OU=Groups,DC=Example,DC=Org"],
        ),
        user("dan", &[PAIE, RH]), // not a VPN user: reaches nothing
        user("erin", &[VPN]),     // a VPN user granted nothing
        user("fanny", &[VPN, INTRANET]),
        user("gaston", &[VPN, PAIE]), // disabled in the directory after enrolling
        user("hugo", &[VPN, PAIE]),   // devices suspended by the sync
        user("ines", &[VPN, PAIE, INTRANET, RH, RH_PARIS]),
        user("jules", &[VPN, PAIE]), // left the groups after enrolling
    ];
    let mut devices: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut n = 0u8;
    for (round, p) in [0, 1, 2]
        .iter()
        .flat_map(|r| people.iter().map(move |p| (r, p)))
    {
        // Everyone has two devices, alice, ines and carol three.
        if *round == 2 && !["alice", "ines", "carol"].contains(&p.username.as_str()) {
            continue;
        }
        n += 1;
        let code = code_for(db, &p.username, &format!("pc-{}-{round}", p.username)).await;
        let id = enrol(db, &code, p, key(n), "100.64.0.0/24")
            .await
            .expect("enrol")
            .device
            .id;
        devices.entry(p.username.as_str()).or_default().push(id);
    }
    // One of alice's and one of ines's revoked; hugo's suspended; gaston disabled; jules gone
    // from every group but VPN.
    for (name, i) in [("alice", 1), ("ines", 0)] {
        s.revoke_device(devices[name][i], "lost", &it_staff())
            .await
            .expect("revoke");
    }
    s.suspend_user_devices("hugo", "left vpn_users", &it_staff())
        .await
        .expect("suspend");
    s.upsert_user(&DirectoryUser {
        disabled: true,
        ..user("gaston", &[VPN, PAIE])
    })
    .await
    .expect("disable");
    s.upsert_user(&user("jules", &[VPN]))
        .await
        .expect("jules's groups");
    // Sessions and flows of some devices; a factor for alice (TOTP-like), bob (RADIUS) and a
    // registration only begun for carol (not shown).
    let mut events = Vec::new();
    for (i, name) in ["alice", "bob", "carol", "ines", "fanny"]
        .iter()
        .enumerate()
    {
        let d = *devices[name].last().expect("device");
        let t = T0 + i64::try_from(i).expect("small") * MIN;
        events.push((t, session_started(d, name, t)));
        for (j, r) in ["paie", "rh", "intranet", "annuaire"].iter().enumerate() {
            let at = t + i64::try_from(j + 1).expect("small") * 1_000;
            events.push((at, flow(Some(d), Some(name), r, t, 100 * (j as u64 + 1))));
        }
    }
    s.append_audit_bulk(&events).await.expect("events");
    s.mfa_record_use("alice", "totp").await.expect("factor");
    s.mfa_record_use("bob", "radius").await.expect("factor");
    s.mfa_begin_registration("carol", "totp", "sealed")
        .await
        .expect("pending");
    people.iter().map(|p| p.username.clone()).collect()
}

/// The review as it was computed before it read per subject: every active device with its
/// user, the rule applied to all, then the entries and static peers sorted by (resource,
/// device id). Kept verbatim as the reference.
async fn full_read(store: &Store, cfg: &ReviewPolicy<'_>, subject: &ReviewSubject) -> Review {
    let reached = reachable(store.active_devices().await.expect("devices"), cfg, subject);
    let ids: Vec<i64> = reached.iter().map(|(d, _)| d.device.id).collect();
    let mut sessions = store.last_sessions(&ids).await.expect("sessions");
    let only = match subject {
        ReviewSubject::Resource(r) => Some(r.as_str()),
        ReviewSubject::User(_) | ReviewSubject::Site(_) => None,
    };
    let mut flows = store.last_flows(&ids, only).await.expect("flows");
    let factors: HashMap<String, FactorSeen> = store
        .mfa_factors()
        .await
        .expect("factors")
        .into_iter()
        .map(|f| {
            let seen = FactorSeen {
                kind: f.kind,
                registered_at: f.registered_at.map(sesame::time::format),
                last_used_at: f.last_used_at.map(sesame::time::format),
            };
            (f.username, seen)
        })
        .collect();
    let mut entries = Vec::new();
    for (d, resources) in reached {
        let last_session = sessions.remove(&d.device.id).map(SessionSeen::from_event);
        for resource in resources {
            let last_flow = flows
                .remove(&(d.device.id, resource.clone()))
                .map(FlowSeen::from_event);
            let via = d
                .user
                .groups
                .iter()
                .filter_map(|g| {
                    let grants = cfg.policy.grant_sections(g, &resource);
                    (!grants.is_empty()).then(|| Via {
                        group: Some(g.clone()),
                        grants,
                        peer: None,
                    })
                })
                .collect();
            entries.push(ReviewEntry {
                site: resource_site(cfg.policy, &resource),
                mfa: cfg.policy.needs_mfa(&resource),
                factor: factors.get(&normalize_username(&d.user.username)).cloned(),
                resource,
                username: Some(d.user.username.clone()),
                display_name: Some(d.user.display_name.clone()),
                device_id: Some(d.device.id),
                device_name: d.device.name.clone(),
                hostname: Some(d.device.hostname.clone()),
                tunnel_address: d.device.tunnel_address.to_string(),
                via,
                last_session: last_session.clone(),
                last_flow,
            });
        }
    }
    let peer_resources: Vec<&str> = match subject {
        ReviewSubject::Resource(r) => vec![r.as_str()],
        ReviewSubject::Site(s) => cfg
            .policy
            .resources()
            .filter(|r| resource_site(cfg.policy, &r.name) == *s)
            .map(|r| r.name.as_str())
            .collect(),
        ReviewSubject::User(_) => Vec::new(),
    };
    for r in peer_resources {
        for p in cfg
            .static_peers
            .iter()
            .filter(|p| p.resources.iter().any(|x| x == r))
        {
            entries.push(ReviewEntry {
                resource: r.to_string(),
                site: resource_site(cfg.policy, r),
                username: None,
                display_name: None,
                device_id: None,
                device_name: p.name.clone(),
                hostname: None,
                tunnel_address: p.address.to_string(),
                via: vec![Via {
                    group: None,
                    grants: Vec::new(),
                    peer: Some(p.name.clone()),
                }],
                last_session: None,
                last_flow: None,
                mfa: cfg.policy.needs_mfa(r),
                factor: None,
            });
        }
    }
    entries.sort_by(|a, b| (&a.resource, a.device_id).cmp(&(&b.resource, b.device_id)));
    let (resource, user, site) = match subject {
        ReviewSubject::Resource(r) => (Some(r.clone()), None, None),
        ReviewSubject::User(u) => (None, Some(u.clone()), None),
        ReviewSubject::Site(s) => (None, None, Some(s.clone())),
    };
    Review {
        resource,
        user,
        site,
        total: entries.len() as u64,
        entries,
        next_cursor: None,
    }
}

/// Every subject of the configuration and the store (and a few that name nothing).
fn subjects(users: &[String]) -> Vec<ReviewSubject> {
    let mut out: Vec<ReviewSubject> = ["paie", "rh", "intranet", "annuaire", "vide"]
        .into_iter()
        .map(|r| ReviewSubject::Resource(r.into()))
        .collect();
    out.extend(users.iter().map(|u| ReviewSubject::User(u.clone())));
    out.push(ReviewSubject::User("personne".into()));
    for s in ["rectorat", "dsden56", "local", "ailleurs"] {
        out.push(ReviewSubject::Site(s.into()));
    }
    out
}

async fn each_subjects_review_is_the_full_reads_review(db: Db) {
    let users = fill(&db).await;
    let (policy, vpn_users, peers) = config();
    let cfg = ReviewPolicy {
        policy: &policy,
        vpn_users: &vpn_users,
        static_peers: &peers,
    };
    let mut seen = 0;
    for subject in subjects(&users) {
        let want = full_read(&db.store, &cfg, &subject).await;
        let got = access_review(&db.store, &cfg, &subject, &PageAsk::default())
            .await
            .expect("review");
        assert_eq!(got, want, "{subject:?}");
        seen += want.entries.len();
    }
    // The fill holds what it must for the comparison to mean something: peers, devices of
    // several users per resource, the factor, the nested group's grant.
    let want = full_read(&db.store, &cfg, &ReviewSubject::Site("rectorat".into())).await;
    let who: Vec<(&str, Option<&str>)> = want
        .entries
        .iter()
        .map(|e| (e.resource.as_str(), e.username.as_deref()))
        .collect();
    for present in [
        ("paie", None),
        ("paie", Some("alice")),
        ("paie", Some("carol")),
        ("paie", Some("gaston")),
        ("paie", Some("ines")),
        ("rh", Some("bob")),
    ] {
        assert!(who.contains(&present), "{present:?} in {who:?}");
    }
    for absent in ["dan", "erin", "hugo", "jules"] {
        assert!(who.iter().all(|(_, u)| *u != Some(absent)), "{absent}");
    }
    assert!(want
        .entries
        .iter()
        .any(|e| e.factor.is_some() && e.last_flow.is_some()));
    let annuaire = full_read(&db.store, &cfg, &ReviewSubject::Resource("annuaire".into())).await;
    assert_eq!(
        annuaire.entries.len(),
        1 + 2 + 2,
        "sauvegarde, bob's two, ines's two"
    );
    assert!(seen > 60, "{seen} entries compared");
}

async fn pages_cover_the_review_once_in_order(db: Db) {
    let users = fill(&db).await;
    let (policy, vpn_users, peers) = config();
    let cfg = ReviewPolicy {
        policy: &policy,
        vpn_users: &vpn_users,
        static_peers: &peers,
    };
    for subject in subjects(&users) {
        let want = full_read(&db.store, &cfg, &subject).await;
        for limit in [1, 2, 3, 7, want.entries.len().max(1)] {
            let mut got: Vec<ReviewEntry> = Vec::new();
            let mut after: Option<ReviewCursor> = None;
            let mut pages = 0;
            loop {
                let ask = PageAsk {
                    after: after.clone(),
                    limit: Some(limit),
                };
                let page = access_review(&db.store, &cfg, &subject, &ask)
                    .await
                    .expect("page");
                pages += 1;
                assert_eq!(page.total, want.total, "{subject:?}, limit {limit}");
                assert!(page.entries.len() <= limit);
                got.extend(page.entries);
                match page.next_cursor {
                    Some(c) => after = Some(ReviewCursor::decode(&c).expect("cursor")),
                    None => break,
                }
            }
            assert_eq!(got, want.entries, "{subject:?}, limit {limit}");
            // No empty last page: as many pages as the entries need.
            assert_eq!(
                pages,
                want.entries.len().div_ceil(limit).max(1),
                "{subject:?}, limit {limit}"
            );
        }
    }
}

/// The portal keeps each resource's count while the change log stands still: every change of
/// the peer set (an enrolment, a revocation, a suspension, a user's groups) is counted anew.
async fn a_kept_count_follows_every_change_of_the_peer_set(db: Db) {
    fill(&db).await;
    let (policy, vpn_users, peers) = config();
    let cfg = ReviewPolicy {
        policy: &policy,
        vpn_users: &vpn_users,
        static_peers: &peers,
    };
    let counts = ReviewCounts::default();
    let ask = PageAsk {
        after: None,
        limit: Some(2),
    };
    let s = &db.store;
    let totals = || async {
        let mut out = Vec::new();
        for subject in ["paie", "rectorat"] {
            let subject = if subject == "paie" {
                ReviewSubject::Resource(subject.into())
            } else {
                ReviewSubject::Site(subject.into())
            };
            let kept = access_review_counted(s, &cfg, &subject, &ask, &counts)
                .await
                .expect("counted");
            let fresh = access_review(s, &cfg, &subject, &ask)
                .await
                .expect("review");
            assert_eq!(kept, fresh, "{subject:?}");
            out.push(kept.total);
        }
        out
    };
    let before = totals().await;
    assert_eq!(totals().await, before, "nothing changed");
    let newcomer = user("zoe", &[VPN, PAIE]);
    let code = code_for(&db, "zoe", "pc-zoe").await;
    let zoe = enrol(&db, &code, &newcomer, key(200), "100.64.0.0/24")
        .await
        .expect("enrol")
        .device
        .id;
    let enrolled = totals().await;
    assert_eq!(enrolled, [before[0] + 1, before[1] + 1]);
    s.revoke_device(zoe, "stolen", &it_staff())
        .await
        .expect("revoke");
    assert_eq!(totals().await, before);
    s.suspend_user_devices("carol", "left", &it_staff())
        .await
        .expect("suspend");
    let suspended = totals().await;
    assert!(suspended[0] < before[0], "{suspended:?} {before:?}");
    s.upsert_user(&user("alice", &[VPN, RH]))
        .await
        .expect("alice leaves paie");
    let moved = totals().await;
    assert!(moved[0] < suspended[0], "{moved:?} {suspended:?}");
}
