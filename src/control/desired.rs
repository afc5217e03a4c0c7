//! The desired peer set, computed purely from active devices, their users' groups and the policy.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::config::StaticPeer;
use crate::policy::{normalize_dn, Policy, RuleSet};

/// One peer the gateway must have: key, tunnel address, compiled rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    pub public_key: [u8; 32],
    pub address: Ipv4Addr,
    pub rules: RuleSet,
    /// For logs and metrics: `device:ID:user` or `static:NAME`.
    pub label: String,
    pub persistent_keepalive: Option<u16>,
}

/// Who a gateway peer is, read back from its label (`device:ID:USER`, `static:NAME`, or a
/// static peer's bare name as `sesame gateway` labels them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    Device { id: i64, username: String },
    Static { name: String },
}

impl PeerIdentity {
    /// The label the control plane gives this peer.
    pub fn label(&self) -> String {
        match self {
            PeerIdentity::Device { id, username } => format!("device:{id}:{username}"),
            PeerIdentity::Static { name } => format!("static:{name}"),
        }
    }

    pub fn parse(label: &str) -> PeerIdentity {
        if let Some((id, username)) = label
            .strip_prefix("device:")
            .and_then(|rest| rest.split_once(':'))
        {
            if let Ok(id) = id.parse() {
                return PeerIdentity::Device {
                    id,
                    username: username.to_string(),
                };
            }
        }
        let name = label.strip_prefix("static:").unwrap_or(label);
        PeerIdentity::Static {
            name: name.to_string(),
        }
    }
}

/// An active enrolled device and the groups its user had at the last login, enrolment or sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveDevice {
    pub id: i64,
    pub username: String,
    pub public_key: [u8; 32],
    pub address: Ipv4Addr,
    pub groups: Vec<String>,
}

/// Whether `groups` contains any of `role_groups` (DNs compared case- and space-insensitively).
pub fn has_role(groups: &[String], role_groups: &[String]) -> bool {
    let wanted: BTreeSet<String> = role_groups.iter().map(|g| normalize_dn(g)).collect();
    groups.iter().any(|g| wanted.contains(&normalize_dn(g)))
}

/// Names of the resources a member of `groups` may reach.
pub fn resources_for(policy: &Policy, groups: &[String]) -> BTreeSet<String> {
    policy.resources_for_groups(groups.iter().map(String::as_str))
}

/// The full desired state: static peers first, then every active device of a current VPN user.
/// A device whose user is no longer in a `vpn_users` group gets no peer (deny by default) even
/// before the sync loop revokes it.
pub fn desired_peers(
    policy: &Policy,
    vpn_users: &[String],
    static_peers: &[StaticPeer],
    devices: &[ActiveDevice],
) -> Vec<DesiredPeer> {
    let mut out = Vec::with_capacity(static_peers.len() + devices.len());
    for p in static_peers {
        out.push(DesiredPeer {
            public_key: p.public_key,
            address: p.address,
            rules: policy.rules_for_resources(p.resources.iter().map(String::as_str)),
            label: PeerIdentity::Static {
                name: p.name.clone(),
            }
            .label(),
            persistent_keepalive: p.persistent_keepalive,
        });
    }
    for d in devices {
        if !has_role(&d.groups, vpn_users) {
            continue;
        }
        let names = resources_for(policy, &d.groups);
        out.push(DesiredPeer {
            public_key: d.public_key,
            address: d.address,
            rules: policy.rules_for_resources(names.iter().map(String::as_str)),
            label: PeerIdentity::Device {
                id: d.id,
                username: d.username.clone(),
            }
            .label(),
            persistent_keepalive: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Resource;

    const VPN: &str = "cn=personnels,ou=groups,dc=ac,dc=fr";
    const PAIE: &str = "cn=gestionnaires-paie,ou=groups,dc=ac,dc=fr";
    const RH: &str = "cn=rh,ou=groups,dc=ac,dc=fr";

    fn policy() -> Policy {
        let mut p = Policy::new([
            Resource {
                name: "paie".into(),
                site: "rectorat".into(),
                description: String::new(),
                rules: vec!["198.18.10.10/32 tcp:443".parse().expect("rule")],
            },
            Resource {
                name: "rh".into(),
                site: "rectorat".into(),
                description: String::new(),
                rules: vec!["198.18.20.0/24 any".parse().expect("rule")],
            },
        ]);
        p.grant(PAIE, &["paie".into()]).expect("grant");
        p.grant(RH, &["rh".into()]).expect("grant");
        p
    }

    fn device(id: i64, groups: &[&str]) -> ActiveDevice {
        ActiveDevice {
            id,
            username: format!("u{id}"),
            public_key: [id as u8; 32],
            address: Ipv4Addr::new(100, 64, 0, 1 + id as u8),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn a_device_gets_the_union_of_its_groups_resources_and_nothing_else() {
        let p = policy();
        let peers = desired_peers(&p, &[VPN.into()], &[], &[device(1, &[VPN, PAIE])]);
        assert_eq!(peers.len(), 1);
        let nets: Vec<String> = peers[0]
            .rules
            .networks()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, vec!["198.18.10.10/32"]);
        assert_eq!(peers[0].label, "device:1:u1");
    }

    #[test]
    fn a_user_outside_vpn_users_gets_no_peer_and_a_vpn_user_without_grant_gets_deny_all() {
        let p = policy();
        let peers = desired_peers(
            &p,
            &[VPN.into()],
            &[],
            &[
                device(1, &[PAIE]),
                device(2, &["CN=Personnels, OU=groups,dc=ac,dc=fr"]),
            ],
        );
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].label, "device:2:u2");
        assert!(peers[0].rules.is_empty());
    }

    #[test]
    fn labels_say_who_a_peer_is() {
        for who in [
            PeerIdentity::Device {
                id: 42,
                username: "jean:dupont".into(),
            },
            PeerIdentity::Static {
                name: "supervision".into(),
            },
        ] {
            assert_eq!(PeerIdentity::parse(&who.label()), who);
        }
        assert_eq!(
            PeerIdentity::parse("supervision"),
            PeerIdentity::Static {
                name: "supervision".into()
            }
        );
        assert_eq!(
            PeerIdentity::parse("device:x:y"),
            PeerIdentity::Static {
                name: "device:x:y".into()
            }
        );
    }

    #[test]
    fn static_peers_are_always_present() {
        let p = policy();
        let s = StaticPeer {
            name: "supervision".into(),
            public_key: [9; 32],
            address: Ipv4Addr::new(100, 64, 255, 1),
            resources: vec!["rh".into()],
            persistent_keepalive: Some(25),
        };
        let peers = desired_peers(&p, &[VPN.into()], &[s], &[]);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].label, "static:supervision");
        assert_eq!(peers[0].persistent_keepalive, Some(25));
        assert_eq!(peers[0].rules.networks()[0].to_string(), "198.18.20.0/24");
    }
}
