//! What a user may reach and why: directory lookups bounded in time, effective access by group.

use std::time::Duration;

use crate::config::Config;
use crate::directory::{Directory, DirectoryError, DirectoryUser};
use crate::policy::normalize_dn;

use super::ServiceError;

/// `Directory::lookup` bounded by `deadline` (a hung directory is an error, not a wait).
pub async fn lookup(
    directory: &dyn Directory,
    deadline: Duration,
    username: &str,
) -> Result<Option<DirectoryUser>, ServiceError> {
    match tokio::time::timeout(deadline, directory.lookup(username)).await {
        Ok(r) => r.map_err(|e: DirectoryError| ServiceError::Directory(e)),
        Err(_) => Err(ServiceError::DirectoryTimeout),
    }
}

/// One resource a user may reach, with the groups that grant it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub resource: String,
    pub description: String,
    /// Group DNs (as the directory spells them) whose `[[grant]]` lists the resource.
    pub via_groups: Vec<String>,
}

/// A user's effective access: the union of the resources granted to their groups (deny by
/// default: no group with a grant, nothing reachable), each explained by its groups.
pub fn effective_access(config: &Config, groups: &[String]) -> Vec<Grant> {
    let policy = &config.policy;
    let names = policy.resources_for_groups(groups.iter().map(String::as_str));
    names
        .iter()
        .map(|name| {
            let via_groups = groups
                .iter()
                .filter(|g| {
                    policy
                        .grants()
                        .any(|(dn, res)| dn == normalize_dn(g) && res.contains(name))
                })
                .cloned()
                .collect();
            Grant {
                resource: name.clone(),
                description: policy
                    .resource(name)
                    .map(|r| r.description.clone())
                    .unwrap_or_default(),
                via_groups,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resource_names_the_groups_granting_it() {
        let text = r#"
[[resource]]
name = "paie"
description = "Paie"
allow = ["198.18.10.10/32 tcp:443"]
[[resource]]
name = "rh"
allow = ["198.18.20.0/24 tcp:443"]
[[grant]]
group = "cn=paie,dc=x"
resources = ["paie"]
[[grant]]
group = "cn=chefs,dc=x"
resources = ["paie", "rh"]
"#;
        let config = Config::parse(std::path::Path::new("/t.toml"), text).expect("config");
        let got = effective_access(&config, &["CN=Paie,dc=x".into(), "cn=chefs,dc=x".into()]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].resource, "paie");
        assert_eq!(got[0].description, "Paie");
        assert_eq!(got[0].via_groups, vec!["CN=Paie,dc=x", "cn=chefs,dc=x"]);
        assert_eq!(got[1].via_groups, vec!["cn=chefs,dc=x"]);
        assert!(effective_access(&config, &["cn=other,dc=x".into()]).is_empty());
    }
}
