//! Roles: the typed set resolved from directory groups in one place, and who may act on whom.

use std::collections::BTreeSet;

use crate::config::RolesConfig;
use crate::policy::normalize_dn;

use super::ServiceError;

/// A role granted by membership of the groups listed in `[roles]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    VpnUser,
    ItStaff,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::VpnUser, Role::ItStaff, Role::Auditor];

    /// The stable name (login answer, sessions).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::VpnUser => "vpn_user",
            Role::ItStaff => "it_staff",
            Role::Auditor => "auditor",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::VpnUser => 1,
            Role::ItStaff => 2,
            Role::Auditor => 4,
        }
    }
}

/// A set of roles (at most the three of [`Role`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleSet(u8);

impl RoleSet {
    pub fn with(self, role: Role) -> RoleSet {
        RoleSet(self.0 | role.bit())
    }
    pub fn contains(&self, role: &Role) -> bool {
        self.0 & role.bit() != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        Role::ALL.into_iter().filter(|r| self.contains(r))
    }
    /// The stable names, in [`Role::ALL`] order.
    pub fn names(&self) -> Vec<String> {
        self.iter().map(|r| r.as_str().to_string()).collect()
    }
}

/// Whose users an IT technician manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everyone (a member of a `[roles] it_staff` group, or the CLI run by root).
    All,
    /// Only members of these groups (normalized DNs): `[[roles.delegated]]` scopes.
    Groups(BTreeSet<String>),
}

/// Who is acting: a signed-in person (roles and scope from their directory groups) or the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Lower-cased login, or `cli:<login>` for the command line.
    pub username: String,
    pub roles: RoleSet,
    /// Meaningful for IT staff only.
    pub scope: Scope,
}

/// Whether `groups` contains any of `role_groups` (DNs compared case- and space-insensitively).
pub fn has_role(groups: &[String], role_groups: &[String]) -> bool {
    in_any(&normalized(groups), role_groups)
}

/// `groups` normalized, to test several roles against them (each DN parsed once).
fn normalized(groups: &[String]) -> BTreeSet<String> {
    groups.iter().map(|g| normalize_dn(g)).collect()
}

/// Whether one of `role_groups` is among the normalized groups `mine`.
fn in_any(mine: &BTreeSet<String>, role_groups: &[String]) -> bool {
    role_groups.iter().any(|g| mine.contains(&normalize_dn(g)))
}

impl Actor {
    /// The one place roles are resolved: `[roles]` groups give roles; a member of a
    /// `[[roles.delegated]]` technician group is IT staff limited to that entry's scope group
    /// (unless a full `it_staff` group also lists them).
    pub fn resolve(cfg: &RolesConfig, username: &str, groups: &[String]) -> Actor {
        let mine = normalized(groups);
        let mut roles = RoleSet::default();
        if in_any(&mine, &cfg.vpn_users) {
            roles = roles.with(Role::VpnUser);
        }
        if in_any(&mine, &cfg.auditors) {
            roles = roles.with(Role::Auditor);
        }
        let scope = if in_any(&mine, &cfg.it_staff) {
            roles = roles.with(Role::ItStaff);
            Scope::All
        } else {
            let scopes: BTreeSet<String> = cfg
                .delegated
                .iter()
                .filter(|d| in_any(&mine, std::slice::from_ref(&d.it_staff)))
                .map(|d| normalize_dn(&d.scope))
                .collect();
            if !scopes.is_empty() {
                roles = roles.with(Role::ItStaff);
            }
            Scope::Groups(scopes)
        };
        Actor {
            username: username.trim().to_lowercase(),
            roles,
            scope,
        }
    }

    /// An administrator at the server's command line: every role, every user.
    pub fn cli(login: String) -> Actor {
        Actor {
            username: login,
            roles: Role::ALL.iter().fold(RoleSet::default(), |s, r| s.with(*r)),
            scope: Scope::All,
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// `Err(Forbidden)` unless the actor holds `role`.
    pub fn require(&self, role: Role) -> Result<(), ServiceError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden)
        }
    }

    /// Whether this actor, as IT staff, manages a user who is a member of `target_groups`.
    pub fn manages(&self, target_groups: &[String]) -> bool {
        if !self.has(Role::ItStaff) {
            return false;
        }
        match &self.scope {
            Scope::All => true,
            Scope::Groups(scopes) => target_groups
                .iter()
                .any(|g| scopes.contains(&normalize_dn(g))),
        }
    }

    /// Whether the actor's IT rights are limited to some users (delegated administration).
    pub fn is_delegated(&self) -> bool {
        self.has(Role::ItStaff) && self.scope != Scope::All
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DelegatedRole;

    const DSI: &str = "cn=dsi,ou=groups,dc=x";
    const DSI56: &str = "cn=dsi-56,ou=groups,dc=x";
    const STAFF56: &str = "cn=personnels-dsden56,ou=groups,dc=x";
    const STAFF29: &str = "cn=personnels-dsden29,ou=groups,dc=x";

    fn cfg() -> RolesConfig {
        RolesConfig {
            vpn_users: vec!["cn=vpn,dc=x".into()],
            it_staff: vec![DSI.into()],
            auditors: vec!["cn=audit,dc=x".into()],
            delegated: vec![DelegatedRole {
                it_staff: DSI56.into(),
                scope: STAFF56.into(),
            }],
        }
    }

    #[test]
    fn roles_come_from_configured_groups() {
        let a = Actor::resolve(&cfg(), " TLeroux ", &["CN=DSI, ou=groups,dc=x".into()]);
        assert_eq!(a.username, "tleroux");
        assert_eq!(a.roles.names(), vec!["it_staff"]);
        assert_eq!(a.scope, Scope::All);
        let none = Actor::resolve(&cfg(), "x", &["cn=other,dc=x".into()]);
        assert!(none.roles.is_empty());
        assert!(!none.manages(&[STAFF56.into()]));
        let both = Actor::resolve(&cfg(), "x", &["cn=vpn,dc=x".into(), "cn=audit,dc=x".into()]);
        assert_eq!(both.roles.names(), vec!["vpn_user", "auditor"]);
        assert!(both.require(Role::ItStaff).is_err());
    }

    #[test]
    fn delegated_technicians_manage_their_scope_only() {
        let t = Actor::resolve(&cfg(), "tech56", &[DSI56.into()]);
        assert!(t.has(Role::ItStaff));
        assert!(t.is_delegated());
        assert!(t.manages(&[STAFF56.to_uppercase()]));
        assert!(!t.manages(&[STAFF29.into()]));
        assert!(!t.manages(&[]));
        let full = Actor::resolve(&cfg(), "chef", &[DSI.into(), DSI56.into()]);
        assert!(!full.is_delegated());
        assert!(full.manages(&[STAFF29.into()]));
    }
}
