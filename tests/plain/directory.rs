//! LdapDirectory against a real slapd seeded with config/ldap/academie.ldif.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

// Only the fixture this test uses (no shared tests/common/mod.rs to merge).
use crate::common;

use std::time::{Duration, Instant};

use common::slapd::{self, group_dn, password_of, user_dn, Slapd};
use sesame::directory::{Directory, DirectoryError, DirectoryUser, LdapDirectory, Unavailable};

fn directory(s: &Slapd) -> LdapDirectory {
    LdapDirectory::new(&s.directory_config()).expect("directory from fixture config")
}

async fn login(d: &LdapDirectory, uid: &str) -> DirectoryUser {
    d.authenticate(uid, password_of(uid))
        .await
        .unwrap_or_else(|e| panic!("{uid} should log in: {e}"))
}

fn groups(cns: &[&str]) -> Vec<String> {
    let mut g: Vec<String> = cns.iter().map(|cn| group_dn(cn)).collect();
    g.sort_by_key(|d| d.to_lowercase());
    g
}

#[tokio::test]
async fn good_login_returns_user_with_nested_groups() {
    let s = Slapd::start();
    let d = directory(&s);

    let u = login(&d, "mdupont").await;
    assert_eq!(u.username, "mdupont");
    assert_eq!(u.dn, user_dn("mdupont"));
    assert_eq!(u.display_name, "Marie Dupont");
    assert!(!u.disabled);
    // gestionnaires-paie directly, cellule-budget by uniqueMember, personnels-administratifs
    // through gestionnaires-paie.
    assert_eq!(
        u.groups,
        groups(&[
            "cellule-budget",
            "gestionnaires-paie",
            "personnels-administratifs"
        ])
    );

    // Two levels: gestionnaires-paie-dsden ⊂ gestionnaires-paie ⊂ personnels-administratifs.
    let u = login(&d, "fnoel").await;
    assert_eq!(u.display_name, "Françoise Nœl");
    assert_eq!(
        u.groups,
        groups(&[
            "gestionnaires-paie",
            "gestionnaires-paie-dsden",
            "personnels-administratifs"
        ])
    );

    let u = login(&d, "tleroux").await;
    assert_eq!(u.groups, groups(&["dsi", "personnels-administratifs"]));
    let u = login(&d, "cgarnier").await;
    assert_eq!(u.groups, groups(&["auditeurs"]));
}

#[tokio::test]
async fn login_is_case_insensitive_and_returns_the_directory_uid() {
    let s = Slapd::start();
    let d = directory(&s);
    let u = d
        .authenticate("MDupont", password_of("mdupont"))
        .await
        .expect("uid matching is case-insensitive in LDAP");
    assert_eq!(u.username, "mdupont");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_indistinguishable() {
    let s = Slapd::start();
    let d = directory(&s);
    let wrong = d.authenticate("mdupont", "Marie-Paie-2025").await;
    let unknown = d.authenticate("nobody", "Marie-Paie-2026").await;
    let other_users_password = d.authenticate("mdupont", password_of("sbernard")).await;
    for r in [&wrong, &unknown, &other_users_password] {
        match r {
            Err(DirectoryError::InvalidCredentials) => {}
            other => panic!("expected InvalidCredentials, got {other:?}"),
        }
    }
    assert_eq!(
        format!("{}", wrong.expect_err("wrong")),
        format!("{}", unknown.expect_err("unknown"))
    );
}

#[tokio::test]
async fn empty_or_blank_password_is_refused_before_any_bind() {
    let s = Slapd::start();
    let d = directory(&s);
    let dn = user_dn("mdupont");
    assert_eq!(s.bind_count(&dn), 0);
    for pw in ["", " ", "\t", "  \n "] {
        match d.authenticate("mdupont", pw).await {
            Err(DirectoryError::EmptyPassword) => {}
            other => panic!("password {pw:?}: expected EmptyPassword, got {other:?}"),
        }
    }
    // A wrong password does reach slapd as a bind for that DN: the log counts it, which shows
    // that the zero above is a real observation.
    assert!(matches!(
        d.authenticate("mdupont", "wrong").await,
        Err(DirectoryError::InvalidCredentials)
    ));
    assert_eq!(
        s.wait_bind_count(&dn, 1),
        1,
        "only the wrong-password bind; log:\n{}",
        s.log()
    );
}

#[tokio::test]
async fn filter_injection_never_authenticates_anyone() {
    let s = Slapd::start();
    let d = directory(&s);
    let hostile = [
        "*",
        "*)(uid=*",
        "\\",
        "\\2a",
        "md\0upont",
        "mdupont\0",
        "admin)(|(uid=*",
        "*)(|(objectClass=*",
        "m*",
        "mdupont)(uid=sbernard",
        "(uid=mdupont)",
        "é*",
    ];
    for name in hostile {
        for pw in [password_of("mdupont"), password_of("sbernard"), "*", "x"] {
            match d.authenticate(name, pw).await {
                Err(DirectoryError::InvalidCredentials) => {}
                other => panic!("login {name:?} / {pw:?} must be refused, got {other:?}"),
            }
        }
        assert_eq!(
            d.lookup(name).await.expect("lookup answers"),
            None,
            "lookup {name:?}"
        );
    }
    // The directory still works normally afterwards.
    login(&d, "mdupont").await;
}

#[tokio::test]
async fn accented_names_and_escaped_comma_in_dn() {
    let s = Slapd::start();
    let d = directory(&s);
    let u = login(&d, "hlefevre").await;
    assert_eq!(u.dn, "cn=Lefèvre\\2C Hélène,ou=people,dc=academie,dc=test");
    assert_eq!(u.display_name, "Lefèvre, Hélène");
    // Her groups are found by a member search on a DN holding a backslash and accents.
    assert_eq!(
        u.groups,
        groups(&["gestionnaires-rh", "personnels-administratifs"])
    );
    let looked = d.lookup("hlefevre").await.expect("lookup").expect("found");
    assert_eq!(looked, u);
}

#[tokio::test]
async fn user_outside_vpn_group_authenticates_without_it() {
    let s = Slapd::start();
    let d = directory(&s);
    let u = login(&d, "pdurand").await;
    assert_eq!(u.groups, groups(&["enseignants"]));
    assert!(!u.groups.contains(&group_dn("personnels-administratifs")));
}

#[tokio::test]
async fn disabled_account_is_reported_on_login_and_lookup() {
    let s = Slapd::start();
    let d = directory(&s);
    for pw in [password_of("rmoreau"), "wrong"] {
        match d.authenticate("rmoreau", pw).await {
            Err(DirectoryError::Disabled) => {}
            other => panic!("rmoreau/{pw}: expected Disabled, got {other:?}"),
        }
    }
    let u = d.lookup("rmoreau").await.expect("lookup").expect("exists");
    assert!(u.disabled);
    assert_eq!(
        u.groups,
        groups(&["gestionnaires-paie", "personnels-administratifs"])
    );

    // Locking and unlocking a live account.
    login(&d, "sbernard").await;
    s.disable_user("sbernard");
    assert!(matches!(
        d.authenticate("sbernard", password_of("sbernard")).await,
        Err(DirectoryError::Disabled)
    ));
    assert!(
        d.lookup("sbernard")
            .await
            .expect("lookup")
            .expect("exists")
            .disabled
    );
    s.enable_user("sbernard");
    assert!(!login(&d, "sbernard").await.disabled);
}

#[tokio::test]
async fn deleted_user_lookup_is_none() {
    let s = Slapd::start();
    let d = directory(&s);
    assert!(d.lookup("jmartin").await.expect("lookup").is_some());
    s.delete_user("jmartin");
    assert_eq!(d.lookup("jmartin").await.expect("lookup"), None);
    assert!(matches!(
        d.authenticate("jmartin", password_of("jmartin")).await,
        Err(DirectoryError::InvalidCredentials)
    ));
    assert_eq!(d.lookup("nobody").await.expect("lookup"), None);
}

#[tokio::test]
async fn group_changes_are_visible_on_next_lookup() {
    let s = Slapd::start();
    let d = directory(&s);
    let before = d.lookup("mdupont").await.expect("lookup").expect("found");
    assert!(before
        .groups
        .contains(&group_dn("personnels-administratifs")));

    s.remove_from_group("mdupont", "gestionnaires-paie");
    let after = d.lookup("mdupont").await.expect("lookup").expect("found");
    assert_eq!(
        after.groups,
        groups(&["cellule-budget"]),
        "paie and, through it, the VPN group are gone"
    );

    s.add_to_group("mdupont", "dsi");
    let again = d.lookup("mdupont").await.expect("lookup").expect("found");
    assert_eq!(again.groups, groups(&["cellule-budget", "dsi"]));
}

#[tokio::test]
async fn nesting_cycle_terminates() {
    let s = Slapd::start();
    let d = directory(&s);
    // personnels-administratifs ⊂ gestionnaires-paie-dsden closes a three-group cycle.
    s.add_to_group(
        &group_dn("personnels-administratifs"),
        "gestionnaires-paie-dsden",
    );
    let u = d.lookup("tleroux").await.expect("lookup").expect("found");
    assert_eq!(
        u.groups,
        groups(&[
            "dsi",
            "gestionnaires-paie",
            "gestionnaires-paie-dsden",
            "personnels-administratifs"
        ])
    );
}

#[tokio::test]
async fn stopped_directory_is_unavailable_quickly_then_recovers() {
    let s = Slapd::start();
    let d = directory(&s);
    login(&d, "mdupont").await; // the pool now holds live connections

    s.stop();
    let t = Instant::now();
    match d.authenticate("mdupont", password_of("mdupont")).await {
        Err(DirectoryError::Unavailable(why)) => {
            let msg = why.to_string();
            assert!(msg.contains(&s.url()), "{msg}");
            // ldap3's error is kept as the source, typed.
            let source = std::error::Error::source(&why).expect("a source");
            assert!(source.is::<ldap3::LdapError>(), "{source:?}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        d.lookup("mdupont").await,
        Err(DirectoryError::Unavailable(_))
    ));
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t.elapsed()
    );

    s.start_again();
    let u = login(&d, "mdupont").await;
    assert_eq!(u.username, "mdupont");
}

#[tokio::test]
async fn hung_directory_times_out_within_the_configured_timeout() {
    let s = Slapd::start();
    let d = directory(&s);
    login(&d, "mdupont").await;

    s.pause();
    let t = Instant::now();
    let r = d.authenticate("mdupont", password_of("mdupont")).await;
    let elapsed = t.elapsed();
    s.resume();
    match r {
        Err(DirectoryError::Unavailable(why)) => {
            assert!(matches!(*why, Unavailable::Timeout { .. }), "{why:?}");
            assert!(why.to_string().contains("5s"), "{why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(4),
        "gave up before the timeout: {elapsed:?}"
    );
    login(&d, "mdupont").await;
}

#[tokio::test]
async fn wrong_service_password_is_unavailable_with_a_clear_message() {
    let s = Slapd::start();
    let mut cfg = s.directory_config();
    let pw = s.dir().join("wrong.password");
    std::fs::write(&pw, "not-the-password\n").expect("write");
    cfg.bind_password_file = pw;
    let d = LdapDirectory::new(&cfg).expect("constructed lazily");
    match d.authenticate("mdupont", password_of("mdupont")).await {
        Err(DirectoryError::Unavailable(why)) => {
            let msg = why.to_string();
            assert!(
                msg.contains(slapd::SERVICE_DN) && msg.contains("bind_password_file"),
                "{msg}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }

    let mut cfg = s.directory_config();
    cfg.user_filter = "(&(uid={username})".into();
    match LdapDirectory::new(&cfg) {
        Err(DirectoryError::Unavailable(why)) => {
            assert!(why.to_string().contains("user_filter"), "{why}")
        }
        other => panic!("expected a user_filter error, got {other:?}"),
    }

    let mut cfg = s.directory_config();
    cfg.bind_password_file = s.dir().join("absent.password");
    match LdapDirectory::new(&cfg) {
        Err(DirectoryError::Unavailable(why)) => {
            assert!(why.to_string().contains("absent.password"), "{why}");
            let source = std::error::Error::source(&why).expect("a source");
            assert!(source.is::<std::io::Error>(), "{source:?}");
        }
        other => panic!("expected Config error, got {other:?}"),
    }
}

#[tokio::test]
async fn ldaps_and_starttls_verify_against_the_configured_ca() {
    let s = Slapd::start_with_tls();

    let mut cfg = s.directory_config();
    cfg.url = s.ldaps_url();
    cfg.ca_file = Some(s.ca_file());
    let d = LdapDirectory::new(&cfg).expect("ldaps config");
    assert_eq!(login(&d, "mdupont").await.username, "mdupont");

    let mut cfg = s.directory_config();
    cfg.starttls = true;
    cfg.ca_file = Some(s.ca_file());
    let d = LdapDirectory::new(&cfg).expect("starttls config");
    assert_eq!(login(&d, "sbernard").await.username, "sbernard");

    // The same server with a CA that did not sign its certificate: refused, never bypassed.
    for starttls in [false, true] {
        let mut cfg = s.directory_config();
        if !starttls {
            cfg.url = s.ldaps_url();
        }
        cfg.starttls = starttls;
        cfg.ca_file = Some(s.wrong_ca_file());
        let d = LdapDirectory::new(&cfg).expect("config");
        match d.authenticate("mdupont", password_of("mdupont")).await {
            Err(DirectoryError::Unavailable(why)) => {
                let msg = why.to_string();
                assert!(
                    msg.contains("certificate") && msg.contains("ca_file"),
                    "{msg}"
                )
            }
            other => panic!("starttls={starttls}: expected Unavailable, got {other:?}"),
        }
    }

    // System roots do not know the test CA either.
    let mut cfg = s.directory_config();
    cfg.url = s.ldaps_url();
    let d = LdapDirectory::new(&cfg).expect("config");
    assert!(matches!(
        d.authenticate("mdupont", password_of("mdupont")).await,
        Err(DirectoryError::Unavailable(_))
    ));

    let mut cfg = s.directory_config();
    cfg.ca_file = Some(s.dir().join("config.ldif"));
    assert!(matches!(
        LdapDirectory::new(&cfg),
        Err(DirectoryError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_logins_all_succeed() {
    let s = Slapd::start();
    let d = std::sync::Arc::new(directory(&s));
    let users = [
        "mdupont", "fnoel", "jmartin", "sbernard", "hlefevre", "tleroux", "cgarnier", "lpetit",
        "pdurand",
    ];
    let mut tasks = Vec::new();
    for i in 0..50 {
        let d = d.clone();
        let uid = users[i % users.len()];
        tasks.push(tokio::spawn(async move {
            d.authenticate(uid, password_of(uid))
                .await
                .map(|u| u.username)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let name = t.await.expect("task").expect("login");
        assert_eq!(name, users[i % users.len()]);
    }
    // Concurrency used several connections rather than one serialised socket.
    let conns = s
        .log()
        .lines()
        .filter(|l| l.contains("ACCEPT from IP=127.0.0.1"))
        .count();
    assert!(
        conns > 2,
        "only {conns} connections for 50 concurrent logins"
    );
}

#[tokio::test]
async fn seeded_lock_is_enforced_by_slapd_itself() {
    let s = Slapd::start();
    // The fixture is what the portal's tests rely on: check it against slapd directly.
    assert!(s.can_bind("mdupont", password_of("mdupont")));
    assert!(!s.can_bind("mdupont", "wrong"));
    assert!(
        !s.can_bind("rmoreau", password_of("rmoreau")),
        "ppolicy lock"
    );
    assert!(s.can_bind(slapd::SERVICE_DN, slapd::SERVICE_PASSWORD));
    s.disable_user("mdupont");
    assert!(!s.can_bind("mdupont", password_of("mdupont")));
    s.enable_user("mdupont");
    assert!(s.can_bind("mdupont", password_of("mdupont")));
}

#[tokio::test]
async fn ambiguous_login_is_refused() {
    let s = Slapd::start();
    let d = directory(&s);
    // A second entry carrying uid=mdupont (another DN, another password).
    s.modify(&format!(
        "dn: cn=Marie Dupont bis,{}\nchangetype: add\nobjectClass: inetOrgPerson\ncn: Marie Dupont bis\n\
         sn: Dupont\nuid: mdupont\nuserPassword: other-password\n",
        slapd::PEOPLE
    ));
    for pw in [password_of("mdupont"), "other-password"] {
        assert!(matches!(
            d.authenticate("mdupont", pw).await,
            Err(DirectoryError::InvalidCredentials)
        ));
    }
    assert_eq!(d.lookup("mdupont").await.expect("lookup"), None);
}

#[tokio::test]
async fn ping_reports_reachability() {
    let s = Slapd::start();
    let d = directory(&s);
    d.ping().await.expect("reachable");
    s.stop();
    assert!(matches!(
        d.ping().await,
        Err(DirectoryError::Unavailable(_))
    ));
    s.start_again();
    d.ping().await.expect("reachable again");

    let mut cfg = s.directory_config();
    cfg.user_base = "ou=nowhere,dc=academie,dc=test".into();
    let d = LdapDirectory::new(&cfg).expect("config");
    match d.ping().await {
        Err(DirectoryError::Unavailable(why)) => {
            assert!(why.to_string().contains("user_base"), "{why}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_user_costs_a_bind_like_a_wrong_password() {
    let s = Slapd::start();
    let d = directory(&s);
    let decoy = format!("cn=sesame-unknown-user,{}", slapd::PEOPLE);
    assert!(matches!(
        d.authenticate("nobody", "whatever").await,
        Err(DirectoryError::InvalidCredentials)
    ));
    assert_eq!(s.wait_bind_count(&decoy, 1), 1);
}

#[tokio::test]
async fn fixture_toml_section_loads_into_the_same_config() {
    let s = Slapd::start();
    let path = s.dir().join("sesame.toml");
    std::fs::write(&path, s.directory_toml()).expect("write toml");
    let cfg = sesame::config::Config::load(&path).expect("fixture TOML is a valid config");
    assert_eq!(cfg.directory, Some(s.directory_config()));
    let d = LdapDirectory::new(cfg.directory.as_ref().expect("directory")).expect("directory");
    login(&d, "tleroux").await;
}

#[tokio::test]
async fn lockout_after_failures_is_not_a_disabled_account() {
    let s = Slapd::start();
    let d = directory(&s);
    // What ppolicy writes after too many failed binds: a timestamp, not the permanent marker.
    s.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 20240101000000Z\n",
        user_dn("sbernard")
    ));
    let u = d.lookup("sbernard").await.expect("lookup").expect("found");
    assert!(!u.disabled, "a lockout must not revoke devices");
    assert!(
        !s.can_bind("sbernard", password_of("sbernard")),
        "slapd enforces the lockout"
    );
    assert!(matches!(
        d.authenticate("sbernard", password_of("sbernard")).await,
        Err(DirectoryError::InvalidCredentials)
    ));
}

#[tokio::test]
async fn logins_reuse_nested_groups_briefly_and_see_direct_changes_at_once() {
    let s = Slapd::start();
    let d = directory(&s);
    let nested = groups(&[
        "gestionnaires-paie",
        "gestionnaires-paie-dsden",
        "personnels-administratifs",
    ]);
    // fnoel: gestionnaires-paie-dsden ⊂ gestionnaires-paie ⊂ personnels-administratifs.
    assert_eq!(login(&d, "fnoel").await.groups, nested);
    // A change two levels up (fnoel's memberOf is unchanged): the next login within the
    // minute reuses the groups it resolved...
    s.remove_from_group(&group_dn("gestionnaires-paie"), "personnels-administratifs");
    assert_eq!(login(&d, "fnoel").await.groups, nested, "reused");
    // ...a lookup (directory sync, role refresh) always reads them, and refreshes the cache.
    let fresh = groups(&["gestionnaires-paie", "gestionnaires-paie-dsden"]);
    let looked_up = d.lookup("fnoel").await.expect("lookup").expect("found");
    assert_eq!(looked_up.groups, fresh);
    assert_eq!(
        login(&d, "fnoel").await.groups,
        fresh,
        "refreshed by the lookup"
    );
    // A direct membership change shows in memberOf, read by every login: seen at once.
    s.add_to_group("fnoel", "dsi");
    let mut with_dsi = groups(&["dsi", "gestionnaires-paie", "gestionnaires-paie-dsden"]);
    with_dsi.sort_by_key(|g| g.to_lowercase());
    assert_eq!(login(&d, "fnoel").await.groups, with_dsi);

    // The reuse never outlives sync_interval (capped at 60 s).
    let mut cfg = s.directory_config();
    cfg.sync_interval = Duration::from_millis(300);
    let short = LdapDirectory::new(&cfg).expect("directory");
    assert_eq!(login(&short, "jmartin").await.groups, fresh);
    s.add_to_group(&group_dn("gestionnaires-paie"), "personnels-administratifs");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        login(&short, "jmartin").await.groups,
        nested,
        "expired: read again"
    );
    // The password is still checked on every login, cached groups or not.
    assert!(matches!(
        short.authenticate("jmartin", "wrong-password").await,
        Err(DirectoryError::InvalidCredentials)
    ));
}
