//! What a pass over the limit holds and what it applies.

use super::*;

fn user(name: &str, found: Option<bool>, suspend: usize, groups_changed: bool) -> UserPlan {
    UserPlan {
        username: name.into(),
        found: found.map(|disabled| DirectoryUser {
            username: name.into(),
            dn: format!("uid={name}"),
            display_name: name.into(),
            groups: Vec::new(),
            disabled,
        }),
        current: false,
        groups_changed,
        lost_group: groups_changed,
        suspend: (0..suspend as i64).collect(),
        reason: (suspend > 0).then_some("test"),
        restore: Vec::new(),
    }
}

#[test]
fn only_the_suspensions_of_users_not_found_wait() {
    let plan = SyncPlan {
        users: vec![
            user("gone1", None, 6, false),
            user("gone2", None, 6, false),
            user("disabled", Some(true), 1, true),
            user("leaver", Some(false), 0, true),
            user("same", Some(false), 0, false),
        ],
        active_devices: 20,
        limit: 10,
    };
    assert!(plan.over_limit() && plan.holds());
    assert_eq!(plan.waiting_users(), ["gone1", "gone2"]);
    assert_eq!(plan.applied_when_held(), ["disabled", "leaver"]);
}

#[test]
fn over_the_limit_with_nobody_missing_holds_nothing() {
    let plan = SyncPlan {
        users: (0..12)
            .map(|i| user(&format!("d{i}"), Some(true), 1, true))
            .collect(),
        active_devices: 20,
        limit: 10,
    };
    assert!(plan.over_limit());
    assert!(!plan.holds());
    assert!(plan.waiting_users().is_empty());
}
