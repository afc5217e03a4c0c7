//! The access review's subject, each resource's site, its cursor and the groups it reads through.

use super::*;
use crate::policy::Resource;

#[test]
fn the_subject_is_exactly_one_of_resource_user_and_site() {
    assert_eq!(
        subject(None, None, Some(" dsden56 ")),
        Ok(ReviewSubject::Site("dsden56".into()))
    );
    assert_eq!(
        subject(None, None, Some("LOCAL")),
        Ok(ReviewSubject::Site(LOCAL_SITE.into())),
        "local in any case"
    );
    assert_eq!(
        subject(Some("paie"), None, Some("")),
        Ok(ReviewSubject::Resource("paie".into())),
        "an empty value is no value"
    );
    for (r, u, s) in [
        (None, None, None),
        (Some("paie"), None, Some("rectorat")),
        (None, Some("alice"), Some("rectorat")),
    ] {
        assert_eq!(subject(r, u, s), Err(QueryError::ReviewSubject));
    }
}

#[test]
fn a_resource_without_a_site_is_the_local_gateways() {
    let resource = |name: &str, site: &str| Resource {
        name: name.into(),
        site: site.into(),
        description: String::new(),
        rules: Vec::new(),
    };
    let policy = Policy::new([resource("paie", "rectorat"), resource("rh", "")]);
    assert_eq!(resource_site(&policy, "paie"), "rectorat");
    assert_eq!(resource_site(&policy, "rh"), LOCAL_SITE);
    assert_eq!(resource_site(&policy, "gone"), LOCAL_SITE);
}

#[test]
fn a_cursor_reads_back_as_written_and_orders_peers_before_devices() {
    for cursor in [
        ReviewCursor {
            resource: "paie".into(),
            slot: Slot::Device(42),
        },
        ReviewCursor {
            resource: "a:b c/é".into(),
            slot: Slot::Peer(0),
        },
    ] {
        assert_eq!(ReviewCursor::decode(&cursor.encode()), Ok(cursor));
    }
    for bad in ["", "???", "cmV2aWV3OmQ6eDpwYWll", "YWZ0ZXI6MTI"] {
        assert_eq!(
            ReviewCursor::decode(bad),
            Err(QueryError::BadCursor),
            "{bad}"
        );
    }
    let at = |resource: &str, slot| ReviewCursor {
        resource: resource.into(),
        slot,
    };
    assert!(at("paie", Slot::Peer(9)) < at("paie", Slot::Device(1)));
    assert!(at("paie", Slot::Device(99)) < at("rh", Slot::Peer(0)));
}

#[test]
fn a_resource_is_read_through_the_groups_granting_it() {
    let resource = |name: &str, site: &str| Resource {
        name: name.into(),
        site: site.into(),
        description: String::new(),
        rules: Vec::new(),
    };
    let mut policy = Policy::new([
        resource("rh", "rectorat"),
        resource("paie", "rectorat"),
        resource("app", ""),
    ]);
    policy
        .grant("CN=Paie, OU=Groups,DC=ac", &["paie".into(), "rh".into()])
        .expect("grant");
    policy
        .grant("cn=rh,ou=groups,dc=ac", &["rh".into()])
        .expect("grant");
    let cfg = ReviewPolicy {
        policy: &policy,
        vpn_users: &[],
        static_peers: &[],
    };
    assert_eq!(cfg.granting("paie"), ["cn=paie,ou=groups,dc=ac"]);
    assert_eq!(
        cfg.granting("rh"),
        ["cn=paie,ou=groups,dc=ac", "cn=rh,ou=groups,dc=ac"]
    );
    assert!(cfg.granting("app").is_empty());
    let site = ReviewSubject::Site("rectorat".into());
    assert_eq!(cfg.resources_of(&site), ["paie", "rh"], "by name");
    assert_eq!(
        cfg.resources_of(&ReviewSubject::User("x".into())),
        ["app", "paie", "rh"]
    );
}
