//! The device list behind `/it/devices` and `GET /api/v1/devices`: owner, status, text search
//! and a delegated (DSDEN) technician's scope applied by the store's query, paged by id, on
//! SQLite AND PostgreSQL.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::both_backends;
use crate::common;
use crate::old_database_tests;

use common::store_db::*;
use sesame::audit::AuditContext;
use sesame::config::{Config, DelegatedRole, LiveConfig, RolesConfig};
use sesame::directory::DirectoryUser;
use sesame::service::devices::{list, list_page, DeviceFilter};
use sesame::service::{Actor, Services};
use sesame::store::{DeviceSearch, DeviceStatus, Store};

const VPN: &str = "cn=personnels-administratifs,ou=groups,dc=example,dc=org";
const DSI: &str = "cn=dsi,ou=groups,dc=example,dc=org";
const DSI56: &str = "cn=dsi-56,ou=groups,dc=example,dc=org";
/// As the directory returns it for the users…
const STAFF56: &str = "cn=personnels-dsden56,ou=groups,dc=example,dc=org";
/// …and as an administrator typed it in `[[roles.delegated]]` (same DN, other case).
const STAFF56_CONFIGURED: &str = "CN=Personnels-DSDEN56,OU=groups,DC=example,DC=org";

both_backends!(scope_search_and_paging_are_applied_by_the_query);
both_backends!(search_ignores_case_and_accents_beyond_ascii);
old_database_tests!(a_search_reads_the_trigram_index);

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

/// One old device: owner, name, host name, tunnel address.
struct OldDevice {
    id: i64,
    owner: String,
    name: String,
    hostname: String,
    address: String,
}

/// 3,000 devices of as many owners; one in 100 has no `search_text` yet; device 1234's host
/// name holds a rare word with an accent.
fn old_devices() -> Vec<OldDevice> {
    (1..=3_000_i64)
        .map(|id| OldDevice {
            id,
            owner: format!("agent{id:05}"),
            name: format!("portable-{id}"),
            hostname: if id == 1234 {
                "PC-Comptabilité-ZQX".into()
            } else {
                format!("pc-{id:05}")
            },
            address: format!("100.64.{}.{}", id / 250, id % 250 + 2),
        })
        .collect()
}

/// A distinct valid key per old device.
fn old_key(id: i64) -> String {
    let mut k = [0xA5; 32];
    k[..8].copy_from_slice(&id.to_le_bytes());
    sesame::key::PublicKey::from_bytes(k)
        .expect("key")
        .to_base64()
}

/// Devices written by a release before migration 0019, some without `search_text` (written
/// before 0010): after the migration, each search reads the trigram index (the plan says so:
/// FTS5 on SQLite, pg_trgm on PostgreSQL) and pages the same devices, in the same order, as a
/// scan of every row.
async fn a_search_reads_the_trigram_index(
    old_url: &str,
    url: &str,
    flavour: &str,
    dir: &std::path::Path,
) {
    let devices = old_devices();
    let pool = schema_before(old_url, flavour, dir, "0019").await;
    for chunk in devices.chunks(500) {
        let rows = |width: usize| {
            (0..chunk.len())
                .map(|r| {
                    let cols: Vec<String> =
                        (1..=width).map(|c| format!("${}", r * width + c)).collect();
                    format!("({})", cols.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sql = format!(
            "INSERT INTO users (username, dn, display_name, last_sync) VALUES {}",
            rows(4)
        );
        let mut q = sqlx::query(&sql);
        for d in chunk {
            q = q
                .bind(d.owner.clone())
                .bind(format!("uid={},ou=people,dc=example,dc=org", d.owner))
                .bind(d.owner.clone())
                .bind(T0);
        }
        q.execute(&pool).await.expect("users");
        let sql = format!(
            "INSERT INTO devices (id, username, name, hostname, public_key, tunnel_address, \
             token_hash, created_at, search_text) VALUES {}",
            rows(9)
        );
        let mut q = sqlx::query(&sql);
        for d in chunk {
            let text = (d.id % 100 != 0 && d.id != 1234)
                .then(|| format!("{}\n{}\n{}", d.owner, d.name, d.hostname));
            q = q
                .bind(d.id)
                .bind(d.owner.clone())
                .bind(d.name.clone())
                .bind(d.hostname.clone())
                .bind(old_key(d.id))
                .bind(d.address.clone())
                .bind(format!("token-{}", d.id))
                .bind(T0)
                .bind(text);
        }
        q.execute(&pool).await.expect("devices");
    }
    pool.close().await;
    let store = Store::connect(url).await.expect("migrate to 0019");
    if flavour == "postgres" {
        sqlx::query("ANALYZE devices")
            .execute(store.pool())
            .await
            .expect("analyze");
    }

    // The scan's answer, from the rows as written: folded owner, name, host name or address.
    let expected = |text: &str| -> Vec<i64> {
        let text = sesame::text::fold(text);
        devices
            .iter()
            .filter(|d| {
                [&d.owner, &d.name, &d.hostname, &d.address]
                    .iter()
                    .any(|f| sesame::text::fold(f).contains(&text))
            })
            .map(|d| d.id)
            .collect()
    };
    for (text, page) in [
        ("comptabilite", 7),
        ("zqx", 7),
        ("PC-0010", 3),
        ("100.64.4.7", 4),
        ("agent0", 500),
        ("-1", 97),
        ("ta", 40),
    ] {
        let mut found = Vec::new();
        let mut after_id = None;
        loop {
            let search = DeviceSearch {
                text: Some(text.into()),
                after_id,
                limit: Some(page),
                ..Default::default()
            };
            let (rows, next) = store.search_devices(&search).await.expect("search");
            found.extend(rows.iter().map(|d| d.id));
            match next {
                Some(id) => after_id = Some(id),
                None => break,
            }
        }
        assert_eq!(found, expected(text), "{flavour}: {text:?}");
    }
    assert_eq!(expected("comptabilite"), [1234]);

    // A rare word is looked up in the trigram index, not matched against every device.
    let rare = DeviceSearch {
        text: Some("Comptabilité".into()),
        limit: Some(50),
        ..Default::default()
    };
    let plan = store.device_search_plan(&rare).await.expect("plan");
    match flavour {
        "sqlite" => assert!(
            plan.contains("VIRTUAL TABLE INDEX") && !plan.contains("SCAN d"),
            "{plan}"
        ),
        _ => assert!(
            plan.contains("devices_search_trgm") && !plan.contains("Seq Scan"),
            "{plan}"
        ),
    }
}

/// A role that may not create pg_trgm (not the database's owner) still migrates: the search
/// scans and finds the same devices. The two statements of docs/install.md, run afterwards by
/// a superuser, give it the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pg_trgm_the_search_scans_until_a_superuser_adds_the_index() {
    let db = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .expect("start PostgreSQL");
    let role = format!("{}_owner_not", db.name);
    let psql = |sql: &str| {
        let out = db.cluster().psql(&db.name, sql);
        assert!(
            out.status.success(),
            "{sql}: {}",
            common::cli::text(&out.stderr)
        );
        common::cli::text(&out.stdout)
    };
    psql(&format!(
        "CREATE ROLE {role} LOGIN; GRANT CREATE ON SCHEMA public TO {role}"
    ));
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    let store = Store::connect(&url)
        .await
        .expect("migrates without pg_trgm");
    assert_eq!(
        psql("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'"),
        "0\n"
    );
    let db = Db {
        store,
        clock: std::sync::Arc::new(sesame::time::ManualClock::new(T0)),
        url,
        guard: Guard::Postgres(db),
    };
    let code = code_for(&db, "marie", "portable-compta").await;
    let marie = enrol(&db, &code, &person("marie"), key(1), "100.64.0.0/24")
        .await
        .expect("enrol")
        .device
        .id;
    let search = DeviceSearch {
        text: Some("COMPTA".into()),
        ..Default::default()
    };
    let (rows, _) = db.store.search_devices(&search).await.expect("search");
    assert_eq!(rows.iter().map(|d| d.id).collect::<Vec<_>>(), [marie]);
    let plan = db.store.device_search_plan(&search).await.expect("plan");
    assert!(!plan.contains("devices_search_trgm"), "{plan}");

    let Guard::Postgres(pg) = &db.guard else {
        unreachable!()
    };
    let out = pg.cluster().psql(&pg.name, SUPERUSER_ADDS_THE_INDEX);
    assert!(out.status.success(), "{}", common::cli::text(&out.stderr));
    // One device: told to read neither the table nor it in id order, as with 100,000 devices
    // the planner would choose for a rare word.
    let out = pg.cluster().psql(
        &pg.name,
        &format!(
            "ALTER ROLE {role} SET enable_seqscan = off; \
             ALTER ROLE {role} SET enable_indexscan = off"
        ),
    );
    assert!(out.status.success(), "{}", common::cli::text(&out.stderr));
    let store = Store::connect(&db.url).await.expect("reconnect");
    let plan = store.device_search_plan(&search).await.expect("plan");
    assert!(plan.contains("devices_search_trgm"), "{plan}");
    let (rows, _) = store.search_devices(&search).await.expect("search");
    assert_eq!(rows.iter().map(|d| d.id).collect::<Vec<_>>(), [marie]);
}

/// docs/install.md, "Device search without pg_trgm", as a superuser runs it.
const SUPERUSER_ADDS_THE_INDEX: &str = "CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX devices_search_trgm ON devices USING gin
    ((COALESCE(search_text, '') || chr(10) || tunnel_address) gin_trgm_ops);";
