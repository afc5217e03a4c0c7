//! What a user may reach and why: effective access by group, a person's own access page and
//! a technician's view of one user.

use std::collections::HashMap;

use crate::config::Config;
use crate::directory::DirectoryUser;
use crate::policy::normalize_dn;
use crate::store::Device;

use super::devices::{self, DeviceFilter};
use super::roles::{Actor, Role, RoleSet};
use super::{ServiceError, Services};

/// A person's own access: their devices (with when each last connected) and what their groups
/// grant.
#[derive(Debug, Clone)]
pub struct MyAccess {
    pub devices: Vec<Device>,
    /// Device id → last `tunnel.session_started` (unix ms); absent: never.
    pub last_connected: HashMap<i64, i64>,
    pub grants: Vec<Grant>,
}

/// "Mon accès" (VPN users): the actor's devices and effective access, from the groups last read
/// from the directory.
pub async fn mine(svc: &Services, actor: &Actor) -> Result<MyAccess, ServiceError> {
    actor.require(Role::VpnUser)?;
    let filter = DeviceFilter {
        user: Some(actor.username.clone()),
        ..Default::default()
    };
    let devices = devices::list(svc, actor, &filter).await?;
    let ids: Vec<i64> = devices.iter().map(|d| d.id).collect();
    let last_connected = devices::last_connections(svc, &ids).await?;
    let groups = svc
        .store()
        .user(&actor.username)
        .await?
        .map(|u| u.groups)
        .unwrap_or_default();
    Ok(MyAccess {
        devices,
        last_connected,
        grants: effective_access(&svc.config(), &groups),
    })
}

/// One user as a technician sees them: as the directory has them now, their roles, what their
/// groups grant and their devices.
#[derive(Debug, Clone)]
pub struct UserView {
    pub user: DirectoryUser,
    pub roles: RoleSet,
    pub grants: Vec<Grant>,
    pub devices: Vec<Device>,
}

/// A user the actor manages (IT staff, within a delegated scope), read from the directory now;
/// `NotFound` for anyone else, as if unknown.
pub async fn user_view(
    svc: &Services,
    actor: &Actor,
    username: &str,
) -> Result<UserView, ServiceError> {
    actor.require(Role::ItStaff)?;
    let user = svc
        .lookup(username)
        .await?
        .filter(|u| actor.manages(&u.groups))
        .ok_or(ServiceError::NotFound)?;
    let config = svc.config();
    let filter = DeviceFilter {
        user: Some(user.username.clone()),
        ..Default::default()
    };
    Ok(UserView {
        roles: Actor::resolve(&config.roles, &user.username, &user.groups).roles,
        grants: effective_access(&config, &user.groups),
        devices: devices::list(svc, actor, &filter).await?,
        user,
    })
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
