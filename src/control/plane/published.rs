//! What the local gateway was last given, indexed so that one device's change finds its peer
//! (by device id, or every device of a user) without walking the whole set.

use std::collections::{BTreeSet, HashMap};

use crate::gateway::{EndReason, PeerIdentity, PeerSpec};
use crate::key::PublicKey;

/// The published peers (static ones included) by key, with the key of each device and the
/// devices of each user, as their labels name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Published {
    peers: HashMap<PublicKey, PeerSpec>,
    devices: HashMap<i64, PublicKey>,
    by_user: HashMap<String, BTreeSet<i64>>,
}

/// What one device's change does to the local gateway: keys to remove (and why), peers to add
/// or replace. Removals go first: a freed address may be taken by a peer added in the same
/// batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Delta {
    pub removed: Vec<(PublicKey, EndReason)>,
    pub upserted: Vec<PeerSpec>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.upserted.is_empty()
    }
}

impl Published {
    pub fn from_set(peers: &[PeerSpec]) -> Self {
        let mut p = Published::default();
        for peer in peers {
            p.insert(peer.clone());
        }
        p
    }

    /// True when `peers` is exactly this set (in any order).
    pub fn same_as(&self, peers: &[PeerSpec]) -> bool {
        peers.len() == self.peers.len()
            && peers
                .iter()
                .all(|p| self.peers.get(&p.public_key) == Some(p))
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerSpec> {
        self.peers.values()
    }

    /// The key of device `id`'s published peer.
    pub fn key_of(&self, id: i64) -> Option<PublicKey> {
        self.devices.get(&id).copied()
    }

    /// The devices of `username` that have a published peer.
    pub fn devices_of(&self, username: &str) -> impl Iterator<Item = i64> + '_ {
        self.by_user.get(username).into_iter().flatten().copied()
    }

    pub fn insert(&mut self, peer: PeerSpec) {
        let key = peer.public_key;
        self.remove(&key);
        if let PeerIdentity::Device { id, username } = PeerIdentity::parse(&peer.label) {
            if let Some(old) = self.devices.insert(id, key) {
                // One peer per device: a stale key of the same device goes.
                if old != key {
                    self.peers.remove(&old);
                }
            }
            self.by_user.entry(username).or_default().insert(id);
        }
        self.peers.insert(key, peer);
    }

    pub fn remove(&mut self, key: &PublicKey) -> Option<PeerSpec> {
        let peer = self.peers.remove(key)?;
        if let PeerIdentity::Device { id, username } = PeerIdentity::parse(&peer.label) {
            if self.devices.get(&id) == Some(key) {
                self.devices.remove(&id);
            }
            if let Some(ids) = self.by_user.get_mut(&username) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_user.remove(&username);
                }
            }
        }
        Some(peer)
    }

    /// What moving device `id` to `next` (its peer now; `None`: it has none) changes, with the
    /// reasons of [`super::removal_reasons`]: its old key goes as rotated when the device keeps
    /// a peer under another key, as revoked when it has none.
    pub fn delta(&self, id: i64, next: Option<&PeerSpec>, out: &mut Delta) {
        let old = self.key_of(id);
        match (old, next) {
            (Some(k), Some(p)) if k == p.public_key => {
                if self.peers.get(&k) != Some(p) {
                    out.upserted.push(p.clone());
                }
            }
            (Some(k), Some(p)) => {
                out.removed.push((k, EndReason::Rotated));
                out.upserted.push(p.clone());
            }
            (Some(k), None) => out.removed.push((k, EndReason::Revoked)),
            (None, Some(p)) => out.upserted.push(p.clone()),
            (None, None) => {}
        }
    }

    /// Applies `delta` to this record.
    pub fn apply(&mut self, delta: &Delta) {
        for (k, _) in &delta.removed {
            self.remove(k);
        }
        for p in &delta.upserted {
            self.insert(p.clone());
        }
    }

    /// The whole set: static peers first, then devices by id (the order of a full computation).
    pub fn to_vec(&self) -> Vec<PeerSpec> {
        let mut peers: Vec<&PeerSpec> = self.peers.values().collect();
        peers.sort_by_key(|p| match PeerIdentity::parse(&p.label) {
            PeerIdentity::Static { name } => (0, 0, name),
            PeerIdentity::Device { id, .. } => (1, id, String::new()),
        });
        peers.into_iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleSet;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32]).expect("key")
    }

    fn device(n: u8, id: i64, user: &str) -> PeerSpec {
        PeerSpec {
            public_key: key(n),
            address: std::net::Ipv4Addr::new(100, 64, 0, n),
            rules: RuleSet::deny_all(),
            protected: RuleSet::deny_all(),
            mfa_until_ms: None,
            label: PeerIdentity::Device {
                id,
                username: user.into(),
            }
            .label(),
            persistent_keepalive: None,
        }
    }

    #[test]
    fn a_device_is_found_by_id_and_by_user_and_a_rotation_replaces_its_key() {
        let stat = PeerSpec {
            label: PeerIdentity::Static { name: "s".into() }.label(),
            ..device(9, 0, "")
        };
        let mut p = Published::from_set(&[device(1, 1, "alice"), device(2, 2, "alice"), stat]);
        assert_eq!(p.key_of(2), Some(key(2)));
        assert_eq!(p.devices_of("alice").collect::<Vec<_>>(), vec![1, 2]);
        // Device 1 rotated to key 11: old key out as rotated, new one in.
        let mut d = Delta::default();
        p.delta(1, Some(&device(11, 1, "alice")), &mut d);
        // Device 2 lost its peer (revoked); an unchanged peer is no change.
        p.delta(2, None, &mut d);
        p.delta(3, None, &mut d);
        assert_eq!(
            d.removed,
            vec![(key(1), EndReason::Rotated), (key(2), EndReason::Revoked)]
        );
        assert_eq!(d.upserted, vec![device(11, 1, "alice")]);
        p.apply(&d);
        assert_eq!(p.key_of(1), Some(key(11)));
        assert_eq!(p.key_of(2), None);
        assert_eq!(p.devices_of("alice").collect::<Vec<_>>(), vec![1]);
        let mut same = Delta::default();
        p.delta(1, Some(&device(11, 1, "alice")), &mut same);
        assert!(same.is_empty());
        // The whole set: the static peer first, then devices by id.
        let all = p.to_vec();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].public_key, key(9));
        assert!(p.same_as(&[all[1].clone(), all[0].clone()]));
    }
}
