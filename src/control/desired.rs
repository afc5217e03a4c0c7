//! The desired peer set, computed purely from active devices, their users' groups and the policy.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use crate::config::StaticPeer;
use crate::gateway::{static_peers, PeerIdentity, PeerSpec};
use crate::key::PublicKey;
use crate::policy::{Policy, RuleSet};

/// An active enrolled device and the groups its user had at the last login, enrolment or sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveDevice {
    pub id: i64,
    pub username: String,
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
    pub groups: Vec<String>,
    /// End of the device's open access window to `mfa = true` resources (unix ms), if any.
    pub mfa_until_ms: Option<i64>,
    /// The laptop's name as IT gave it (`PC-PAIE-01`); empty when read from the peer cache.
    pub name: String,
    /// When the device's key expires (unix ms); `None`: no expiry (or unknown: peer cache).
    pub key_expires_at: Option<i64>,
}

impl ActiveDevice {
    /// `device` (read from the store) with its user's `groups` and its window's end.
    pub fn of(device: &crate::store::Device, groups: &[String], mfa_until_ms: Option<i64>) -> Self {
        ActiveDevice {
            id: device.id,
            username: device.username.clone(),
            public_key: device.public_key,
            address: device.tunnel_address,
            groups: groups.to_vec(),
            mfa_until_ms,
            name: device.name.clone(),
            key_expires_at: device.expires_at,
        }
    }
}

/// The one peer of `device` under `config`: none when its user is not a VPN user.
pub fn device_peer(config: &crate::config::Config, device: &ActiveDevice) -> Option<PeerSpec> {
    desired_peers(
        &config.policy,
        &config.roles.vpn_users,
        &[],
        std::slice::from_ref(device),
    )
    .pop()
}

pub use crate::service::roles::has_role;

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
    statics: &[StaticPeer],
    devices: &[ActiveDevice],
) -> Vec<PeerSpec> {
    let mut out = Vec::with_capacity(statics.len() + devices.len());
    out.extend(static_peers(policy, statics));
    // Users with the same groups (most of an académie's staff share a handful of lists) get
    // the same rules: worked out once per list. Per device, the DN parsing and the rule
    // compilation were most of a whole pass at 100,000 devices (bench/SCALEOUT_REPORT.md).
    let mut by_groups: HashMap<&[String], Option<(RuleSet, RuleSet)>> = HashMap::new();
    for d in devices {
        let grant = by_groups.entry(d.groups.as_slice()).or_insert_with(|| {
            has_role(&d.groups, vpn_users).then(|| {
                let names = resources_for(policy, &d.groups);
                policy.split_rules_for_resources(names.iter().map(String::as_str))
            })
        });
        let Some((rules, protected)) = grant else {
            continue;
        };
        out.push(PeerSpec {
            public_key: d.public_key,
            address: d.address,
            rules: rules.clone(),
            // A window only matters to a device with protected resources.
            mfa_until_ms: d.mfa_until_ms.filter(|_| !protected.is_empty()),
            protected: protected.clone(),
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
            public_key: PublicKey::from_bytes([id as u8; 32]).expect("key"),
            address: Ipv4Addr::new(100, 64, 0, 1 + id as u8),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            mfa_until_ms: None,
            name: format!("PC-{id}"),
            key_expires_at: None,
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
            public_key: PublicKey::from_bytes([9; 32]).expect("key"),
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

    #[test]
    fn protected_resources_go_apart_with_the_window_end_and_a_window_alone_is_dropped() {
        let mut p = policy();
        p.require_mfa("paie").expect("paie");
        let mut d1 = device(1, &[VPN, PAIE, RH]);
        d1.mfa_until_ms = Some(1_800_000_000_000);
        let mut d2 = device(2, &[VPN, RH]);
        d2.mfa_until_ms = Some(1_800_000_000_000);
        let peers = desired_peers(&p, &[VPN.into()], &[], &[d1, d2]);
        let nets = |r: &crate::policy::RuleSet| -> Vec<String> {
            r.networks().iter().map(|n| n.to_string()).collect()
        };
        assert_eq!(nets(&peers[0].rules), vec!["198.18.20.0/24"]);
        assert_eq!(nets(&peers[0].protected), vec!["198.18.10.10/32"]);
        assert_eq!(peers[0].mfa_until_ms, Some(1_800_000_000_000));
        // No protected resource: no window to carry (the peer set does not change with it).
        assert!(peers[1].protected.is_empty());
        assert_eq!(peers[1].mfa_until_ms, None);
    }
}
