//! The access review's subject and each resource's site.

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
