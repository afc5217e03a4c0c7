//! What a sync pass asks slapd: the users many to a search and the groups once
//! (`Directory::lookup_many`), with the answers and the outcome one `lookup` per user gave.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;

use std::sync::Arc;

use common::slapd::{group_dn, user_dn, Slapd, GROUPS, PEOPLE};
use common::store_db::{self, Db};
use sesame::config::DirectoryConfig;
use sesame::control::{DirectorySync, SyncReport};
use sesame::directory::{DirFuture, Directory, DirectoryUser, LdapDirectory};

/// The sync's directory before `lookup_many`: the same `LdapDirectory`, one `lookup` per user
/// (the trait's default `lookup_many`).
struct OneByOne(Arc<LdapDirectory>);

impl Directory for OneByOne {
    fn authenticate<'a>(&'a self, u: &'a str, p: &'a str) -> DirFuture<'a, DirectoryUser> {
        self.0.authenticate(u, p)
    }
    fn lookup<'a>(&'a self, u: &'a str) -> DirFuture<'a, Option<DirectoryUser>> {
        self.0.lookup(u)
    }
    fn ping(&self) -> DirFuture<'_, ()> {
        self.0.ping()
    }
}

fn uids(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("agent{i:03}")).collect()
}

/// 200 agents: agent001–100 in sync-a, agent101–200 in sync-b, both groups in sync-all (the
/// VPN group of these tests).
fn add_agents(s: &Slapd) {
    s.add_people(&uids(1..=200));
    s.add_group("sync-a", &uids(1..=100));
    s.add_group("sync-b", &uids(101..=200));
    s.add_group("sync-all", &[group_dn("sync-a"), group_dn("sync-b")]);
}

/// The seeded people (nested groups, hlefevre's escaped DN, mdupont's groupOfUniqueNames,
/// rmoreau locked, pdurand outside every VPN group) and the agents.
fn everyone() -> Vec<String> {
    let mut all: Vec<String> = [
        "mdupont", "fnoel", "jmartin", "sbernard", "hlefevre", "tleroux", "cgarnier", "lpetit",
        "pdurand", "rmoreau",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(uids(1..=200));
    all
}

async fn one_by_one(d: &LdapDirectory, names: &[String]) -> Vec<Option<DirectoryUser>> {
    let mut out = Vec::new();
    for n in names {
        out.push(d.lookup(n).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_many_answers_what_each_lookup_answers() {
    let s = Slapd::start();
    add_agents(&s);
    // A login carried by two entries (refused), a deleted user, a locked one, a cycle of
    // groups, and a uniqueMember value with the optional UID part.
    s.modify(&format!(
        "dn: cn=Francoise Noel bis,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\n\
         cn: Francoise Noel bis\nsn: Noel\nuid: fnoel\n"
    ));
    s.delete_user("jmartin");
    s.disable_user("agent007");
    s.add_to_group(
        &group_dn("personnels-administratifs"),
        "gestionnaires-paie-dsden",
    );
    s.modify(&format!(
        "dn: cn=cellule-budget,{GROUPS}\nchangetype: modify\nadd: uniqueMember\n\
         uniqueMember: {}#'0101'B\n",
        user_dn("pdurand")
    ));
    let d = LdapDirectory::new(&s.directory_config()).unwrap();
    let mut names = everyone();
    names.extend(["nobody", "TLeroux", "bad\nname", "agent*", ""].map(String::from));
    let want = one_by_one(&d, &names).await;
    assert_eq!(d.lookup_many(&names, 8).await.unwrap(), want);
    // The cases above did occur.
    let by = |n: &str| want[names.iter().position(|x| x == n).unwrap()].clone();
    assert_eq!(by("fnoel"), None, "ambiguous");
    assert_eq!(by("jmartin"), None, "deleted");
    assert!(by("agent007").unwrap().disabled);
    assert_eq!(by("TLeroux").unwrap().username, "tleroux");
    assert_eq!(
        by("agent150").unwrap().groups,
        [group_dn("sync-all"), group_dn("sync-b")]
    );
    assert!(by("mdupont")
        .unwrap()
        .groups
        .contains(&group_dn("gestionnaires-paie-dsden")));

    // A filter that also matches another attribute: each login is then read alone, so an
    // entry found through cn (agent002's cn is "Agent agent002") is still a second match.
    s.modify(&format!(
        "dn: uid=agent201,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\n\
         uid: agent201\ncn: agent002\nsn: Agent\n"
    ));
    let cfg = DirectoryConfig {
        user_filter: "(|(uid={username})(cn={username}))".into(),
        ..s.directory_config()
    };
    let d = LdapDirectory::new(&cfg).unwrap();
    names.push("agent201".into());
    let want = one_by_one(&d, &names).await;
    assert_eq!(
        want[names.iter().position(|x| x == "agent002").unwrap()],
        None
    );
    assert_eq!(d.lookup_many(&names, 8).await.unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_leave_the_answers_unchanged() {
    // Every search of the service account returns 5 entries at most, paged ones included: the
    // batches and the read of group_base are cut. The pass then reads each login alone, and
    // each user's own groups with a search, each group's parents once.
    let s = Slapd::start_with_service_limits("size=5");
    add_agents(&s);
    s.disable_user("agent007");
    let d = LdapDirectory::new(&s.directory_config()).unwrap();
    let names = everyone();
    let n0 = s.search_count();
    let want = one_by_one(&d, &names).await;
    let n1 = s.search_count();
    assert_eq!(want.iter().flatten().count(), names.len());
    assert_eq!(d.lookup_many(&names, 8).await.unwrap(), want);
    let n2 = s.search_count();
    let (one, many) = (n1 - n0, n2 - n1);
    assert!(one >= 3 * 200, "one by one: {one} searches");
    // 3 cut batches + 210 logins + the cut group read + 210 users' groups + 13 groups.
    assert!(many <= 3 + 210 + 1 + 210 + 13, "cut: {many} searches");
}

/// A store where each person has one active laptop and stale directory data (no groups).
async fn store_with_laptops(names: &[String]) -> Db {
    let db = store_db::sqlite_db().await;
    for (i, name) in names.iter().enumerate() {
        let code = store_db::code_for(&db, name, "pc").await;
        let stale = DirectoryUser {
            username: name.clone(),
            dn: format!("uid={name},{PEOPLE}"),
            display_name: name.clone(),
            groups: Vec::new(),
            disabled: false,
        };
        let k = store_db::key(u8::try_from(i + 1).unwrap());
        store_db::enrol(&db, &code, &stale, k, "100.64.0.0/16")
            .await
            .unwrap();
    }
    db
}

/// Everything a pass writes about people and devices.
async fn outcome(db: &Db, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for n in names {
        out.push(format!("{:?}", db.store.user(n).await.unwrap()));
    }
    for d in db.store.list_devices(None).await.unwrap() {
        out.push(format!(
            "{} {} {:?} {:?} {:?}",
            d.username, d.tunnel_address, d.status, d.suspended_at, d.suspend_reason
        ));
    }
    let groups: Vec<(String, String)> =
        sqlx::query_as("SELECT username, group_dn FROM user_groups ORDER BY username, group_dn")
            .fetch_all(db.store.pool())
            .await
            .unwrap();
    out.extend(groups.into_iter().map(|(u, g)| format!("{u} in {g}")));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_costs_a_few_searches_and_changes_what_lookups_changed() {
    let s = Slapd::start();
    add_agents(&s);
    let names = everyone();
    let (batched, before) = (
        store_with_laptops(&names).await,
        store_with_laptops(&names).await,
    );
    // Changes the pass must see: a removed agent and a deleted seeded user (suspended after
    // three passes), a locked agent, an agent who left the VPN group.
    s.delete_user("agent013");
    s.delete_user("jmartin");
    s.disable_user("agent007");
    s.remove_from_group("agent150", "sync-b");

    let cfg = s.directory_config();
    let ldap = Arc::new(LdapDirectory::new(&cfg).unwrap());
    let vpn_users = vec![group_dn("personnels-administratifs"), group_dn("sync-all")];
    let sync = |db: &Db, directory: Arc<dyn Directory>| {
        DirectorySync::new(
            db.store.clone(),
            directory,
            None,
            vpn_users.clone(),
            &cfg,
            Arc::new(sesame::metrics::Metrics::default()),
        )
    };
    let new = sync(&batched, ldap.clone());
    let old = sync(&before, Arc::new(OneByOne(ldap)));
    let mut reports: Vec<(SyncReport, SyncReport)> = Vec::new();
    let (mut new_searches, mut old_searches) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let n0 = s.search_count();
        let a = new.sync_once().await.unwrap();
        let n1 = s.search_count();
        let b = old.sync_once().await.unwrap();
        let n2 = s.search_count();
        new_searches.push(n1 - n0);
        old_searches.push(n2 - n1);
        reports.push((a, b));
    }
    for (a, b) in &reports {
        assert_eq!(a, b);
    }
    assert_eq!(
        outcome(&batched, &names).await,
        outcome(&before, &names).await
    );
    // The changes did happen: 210 checked; 6 suspensions (agent007 and rmoreau locked;
    // agent150, pdurand, cgarnier and lpetit outside every VPN group), then the two absent
    // users' after their third pass.
    assert_eq!(reports[0].0.checked, 210);
    assert_eq!(reports[0].0.devices_suspended, 6);
    assert_eq!(reports[2].0.devices_suspended, 2);
    let agent150 = batched.store.user("agent150").await.unwrap().unwrap();
    assert!(agent150.groups.is_empty());
    let agent151 = batched.store.user("agent151").await.unwrap().unwrap();
    assert_eq!(agent151.groups, [group_dn("sync-all"), group_dn("sync-b")]);
    // One by one: a user search and a search per nesting level, per user. Batched: the ping,
    // a search per 100 users, one page of group_base — whatever the number of users.
    for (new, old) in new_searches.iter().zip(&old_searches) {
        assert!(*old >= 3 * 200, "one by one: {old} searches");
        assert!(
            *new <= 1 + 3 + 1,
            "batched: {new} searches (one by one: {old})"
        );
    }
}

/// A pass writes the rows of the users whose entry changed and of those whose `user_groups`
/// rows are not canonical, and no other: the others' `last_sync` keeps the time of their last
/// change. A pass that finds everything as stored writes no user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_writes_only_the_users_whose_entry_changed() {
    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
    let s = Slapd::start();
    add_agents(&s);
    let names = uids(1..=200);
    let db = store_with_laptops(&names).await;
    let cfg = s.directory_config();
    let sync = DirectorySync::new(
        db.store.clone(),
        Arc::new(LdapDirectory::new(&cfg).unwrap()),
        None,
        vec![group_dn("sync-all")],
        &cfg,
        Arc::new(sesame::metrics::Metrics::default()),
    );
    let stored = || async {
        let mut out = std::collections::BTreeMap::new();
        for n in &names {
            out.insert(n.clone(), db.store.user(n).await.unwrap().unwrap());
        }
        out
    };
    let written_at = |users: &std::collections::BTreeMap<String, sesame::store::User>, at: i64| {
        users
            .values()
            .filter(|u| u.last_sync == at)
            .map(|u| u.username.clone())
            .collect::<Vec<_>>()
    };
    let t1 = store_db::T0 + 3_600_000;
    // The laptops' owners were stored without groups: the first pass rewrites every one.
    db.clock.advance(HOUR);
    sync.sync_once().await.unwrap();
    assert_eq!(written_at(&stored().await, t1), names);

    // agent042 joins a group; agent043 was missed by one pass; agent044's group rows are as
    // migration 0008 could leave them (not in canonical form); agent050 signed in on the web
    // (a live session: the pass refreshes the row, so the session's next request need not ask
    // the directory again, `[portal] role_refresh`).
    s.add_group("sync-c", &uids(42..=42));
    sqlx::query("UPDATE users SET missing_syncs = 1 WHERE username = 'agent043'")
        .execute(db.store.pool())
        .await
        .unwrap();
    let group_rows = |u: &str| {
        let db = &db;
        let u = u.to_string();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT group_dn FROM user_groups WHERE username = $1 ORDER BY group_dn",
            )
            .bind(u)
            .fetch_all(db.store.pool())
            .await
            .unwrap()
        }
    };
    let agent044_rows = group_rows("agent044").await;
    sqlx::query("UPDATE user_groups SET group_dn = upper(group_dn) WHERE username = 'agent044'")
        .execute(db.store.pool())
        .await
        .unwrap();
    db.store
        .create_session(&sesame::store::NewSession {
            username: "agent050".into(),
            roles: vec!["vpn_user".into()],
            ttl: 4 * HOUR,
        })
        .await
        .unwrap();
    db.clock.advance(HOUR);
    sync.sync_once().await.unwrap();
    let after = stored().await;
    assert_eq!(
        written_at(&after, t1 + 3_600_000),
        ["agent042", "agent043", "agent044", "agent050"]
    );
    assert_eq!(written_at(&after, t1).len(), 196);
    assert!(after["agent042"].groups.contains(&group_dn("sync-c")));
    assert_eq!(after["agent043"].missing_syncs, 0);
    assert_eq!(group_rows("agent044").await, agent044_rows);

    // Nothing changed: nobody is written but the user signed in.
    db.clock.advance(HOUR);
    sync.sync_once().await.unwrap();
    let last = stored().await;
    assert_eq!(written_at(&last, t1 + 7_200_000), ["agent050"]);
    let mut expected = after;
    expected.get_mut("agent050").unwrap().last_sync = t1 + 7_200_000;
    assert_eq!(last, expected);
}
