//! The device list behind `/it/devices` and `GET /api/v1/devices`: owner, status, text search
//! and a delegated (DSDEN) technician's scope applied by the store's query, paged by id, on
//! SQLite AND PostgreSQL.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::both_backends;
use crate::common;

use common::store_db::*;
use sesame::audit::AuditContext;
use sesame::config::{Config, DelegatedRole, LiveConfig, RolesConfig};
use sesame::directory::DirectoryUser;
use sesame::service::devices::{list, list_page, DeviceFilter};
use sesame::service::{Actor, Services};
use sesame::store::DeviceStatus;

const VPN: &str = "cn=personnels-administratifs,ou=groups,dc=example,dc=org";
const DSI: &str = "cn=dsi,ou=groups,dc=example,dc=org";
const DSI56: &str = "cn=dsi-56,ou=groups,dc=example,dc=org";
/// As the directory returns it for the users…
const STAFF56: &str = "cn=personnels-dsden56,ou=groups,dc=example,dc=org";
/// …and as an administrator typed it in `[[roles.delegated]]` (same DN, other case).
const STAFF56_CONFIGURED: &str = "CN=Personnels-DSDEN56,OU=groups,DC=example,DC=org";

both_backends!(scope_search_and_paging_are_applied_by_the_query);
both_backends!(search_ignores_case_and_accents_beyond_ascii);

fn roles() -> RolesConfig {
    RolesConfig {
        vpn_users: vec![VPN.into()],
        it_staff: vec![DSI.into()],
        auditors: vec![],
        delegated: vec![DelegatedRole {
            it_staff: DSI56.into(),
            scope: STAFF56_CONFIGURED.into(),
        }],
    }
}

/// The services on this store (the list needs no more than the store; the roles are the
/// actors' own).
fn services(store: &sesame::store::Store) -> Services {
    let config = Config::parse(std::path::Path::new("/t/sesame.toml"), "").expect("config");
    Services::new(LiveConfig::new(config), store.clone())
}

fn member(name: &str, groups: &[&str]) -> DirectoryUser {
    DirectoryUser {
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..person(name)
    }
}

fn names(devices: &[sesame::store::Device]) -> Vec<String> {
    devices.iter().map(|d| d.name.clone()).collect()
}

async fn scope_search_and_paging_are_applied_by_the_query(db: Db) {
    // Four agents of DSDEN 56 (a1…a4), three elsewhere (b1…b3), one laptop each, in that order;
    // a2 has a second one whose name holds an underscore.
    let mut n = 0u8;
    let mut laptop = |who: DirectoryUser, name: String| {
        n += 1;
        let k = key(n);
        let db = &db;
        async move {
            let code = code_for(db, &who.username, &name).await;
            enrol(db, &code, &who, k, "100.64.0.0/24")
                .await
                .expect("enrol")
                .device
        }
    };
    let mut ids = Vec::new();
    for a in ["a1", "a2", "a3", "a4"] {
        ids.push(laptop(member(a, &[VPN, STAFF56]), format!("portable-{a}")).await);
    }
    for b in ["b1", "b2", "b3"] {
        ids.push(laptop(member(b, &[VPN]), format!("portable-{b}")).await);
    }
    let odd = laptop(member("a2", &[VPN, STAFF56]), "poste_compta".into()).await;
    // a3's laptop is revoked.
    db.store
        .revoke_device(ids[2].id, "volé", &AuditContext::new("admin-dsi", None))
        .await
        .expect("revoke");

    let tech = Actor::resolve(&roles(), "tech56", &[DSI56.to_string()]);
    assert!(tech.is_delegated());
    let admin = Actor::resolve(&roles(), "admin", &[DSI.to_string(), VPN.to_string()]);
    let agent = Actor::resolve(&roles(), "b2", &[VPN.to_string()]);
    let all = DeviceFilter::default();

    // The scope: DSDEN 56's devices only (the configured DN in another case still matches).
    let scoped = list(&services(&db.store), &tech, &all).await.expect("list");
    assert_eq!(
        names(&scoped),
        [
            "portable-a1",
            "portable-a2",
            "portable-a3",
            "portable-a4",
            "poste_compta"
        ]
    );
    assert_eq!(
        list(&services(&db.store), &admin, &all)
            .await
            .expect("all")
            .len(),
        8
    );
    assert_eq!(
        names(&list(&services(&db.store), &agent, &all).await.expect("own")),
        ["portable-b2"]
    );

    // Scope + search + status, two per page: exactly the right rows, in id order.
    let search = DeviceFilter {
        query: Some("PORTABLE-".into()),
        status: Some(DeviceStatus::Active),
        ..DeviceFilter::default()
    };
    let p1 = list_page(&services(&db.store), &tech, &search, None, Some(2))
        .await
        .expect("page 1");
    assert_eq!(names(&p1.devices), ["portable-a1", "portable-a2"]);
    assert_eq!(p1.next_after, Some(ids[1].id));
    let p2 = list_page(&services(&db.store), &tech, &search, p1.next_after, Some(2))
        .await
        .expect("page 2");
    assert_eq!(names(&p2.devices), ["portable-a4"], "a3 is revoked");
    assert_eq!(p2.next_after, None);
    // The full view pages the same way over every scope.
    let p = list_page(
        &services(&db.store),
        &admin,
        &search,
        Some(ids[3].id),
        Some(2),
    )
    .await
    .expect("admin page");
    assert_eq!(names(&p.devices), ["portable-b1", "portable-b2"]);
    assert_eq!(p.next_after, Some(ids[5].id));

    // LIKE wildcards typed by a person are plain characters.
    let underscore = DeviceFilter {
        query: Some("_".into()),
        ..DeviceFilter::default()
    };
    let found = list(&services(&db.store), &admin, &underscore)
        .await
        .expect("_");
    assert_eq!(found.iter().map(|d| d.id).collect::<Vec<_>>(), [odd.id]);
    // Search by tunnel address, and by owner.
    let by_addr = DeviceFilter {
        query: Some(ids[4].tunnel_address.to_string()),
        ..DeviceFilter::default()
    };
    assert_eq!(
        names(
            &list(&services(&db.store), &admin, &by_addr)
                .await
                .expect("addr")
        ),
        ["portable-b1"]
    );
    let revoked = DeviceFilter {
        status: Some(DeviceStatus::Revoked),
        ..DeviceFilter::default()
    };
    assert_eq!(
        names(
            &list(&services(&db.store), &tech, &revoked)
                .await
                .expect("revoked")
        ),
        ["portable-a3"]
    );

    // a4 moves out of DSDEN 56 (login or sync stores the new groups): out of the scope at once.
    db.store
        .upsert_user(&member("a4", &[VPN]))
        .await
        .expect("upsert");
    let scoped = list(&services(&db.store), &tech, &all).await.expect("list");
    assert_eq!(
        names(&scoped),
        ["portable-a1", "portable-a2", "portable-a3", "poste_compta"]
    );
}

async fn search_ignores_case_and_accents_beyond_ascii(db: Db) {
    let elodie = member("emartin", &[VPN]);
    let code = code_for(&db, "emartin", "PC-Élodie").await;
    let device = enrol(&db, &code, &elodie, key(1), "100.64.0.0/24")
        .await
        .expect("enrol")
        .device;
    let other = code_for(&db, "b1", "portable-b1").await;
    enrol(&db, &other, &member("b1", &[VPN]), key(2), "100.64.0.0/24")
        .await
        .expect("enrol");
    let admin = Actor::resolve(&roles(), "admin", &[DSI.to_string(), VPN.to_string()]);
    let found = |store: &sesame::store::Store, text: &str| {
        let filter = DeviceFilter {
            query: Some(text.into()),
            ..DeviceFilter::default()
        };
        let store = store.clone();
        let admin = admin.clone();
        async move {
            list(&services(&store), &admin, &filter)
                .await
                .expect("search")
                .iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
        }
    };
    // SQLite's lower() leaves 'É' as is: each of these missed the device before folding.
    for typed in ["élodie", "ÉLODIE", "elodie", "pc-élo", "Elodie"] {
        assert_eq!(found(&db.store, typed).await, [device.id], "{typed}");
    }
    assert!(found(&db.store, "élodiex").await.is_empty());

    // A device stored before migration 0010 (no search text) is filled in at the next start.
    exec(&db.store, "UPDATE devices SET search_text = NULL").await;
    assert!(
        found(&db.store, "elodie").await.is_empty(),
        "nothing to match yet"
    );
    let reopened = sesame::store::Store::connect(&db.url)
        .await
        .expect("reopen");
    assert_eq!(found(&reopened, "elodie").await, [device.id]);
}
