//! The peer table snapshot: three lookups (key, tunnel address, session index) over shared shards.
//!
//! Each map is split into [`SHARDS`] shards behind their own `Arc`. A new snapshot starts as a
//! copy of the old one's shard pointers; changing one peer copies only the shards it lands in
//! (about 1/64 of each map), so the control plane's small changes stay cheap with 10,000 peers.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::peers::Peer;

/// Shards per map: a power of two.
pub const SHARDS: usize = 64;

/// Which shard a key lives in. Keys are spread evenly: public keys are random curve points,
/// addresses and indices are handed out in sequence.
pub trait ShardKey: Eq + Hash + Clone {
    fn shard(&self) -> usize;
}

impl ShardKey for [u8; 32] {
    fn shard(&self) -> usize {
        usize::from(self[0] ^ self[31]) & (SHARDS - 1)
    }
}

impl ShardKey for Ipv4Addr {
    fn shard(&self) -> usize {
        (u32::from(*self) as usize) & (SHARDS - 1)
    }
}

impl ShardKey for u32 {
    fn shard(&self) -> usize {
        (*self as usize) & (SHARDS - 1)
    }
}

/// A hash map split into copy-on-write shards.
#[derive(Debug, Clone)]
pub struct Sharded<K, V> {
    shards: Box<[Arc<HashMap<K, V>>]>,
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
        }
    }
}

impl<K: ShardKey, V: Clone> Sharded<K, V> {
    pub fn get(&self, k: &K) -> Option<&V> {
        self.shards[k.shard()].get(k)
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.shards[k.shard()].contains_key(k)
    }

    /// Copies the key's shard first if another snapshot still shares it.
    pub fn insert(&mut self, k: K, v: V) {
        Arc::make_mut(&mut self.shards[k.shard()]).insert(k, v);
    }

    pub fn remove(&mut self, k: &K) {
        let shard = &mut self.shards[k.shard()];
        if shard.contains_key(k) {
            Arc::make_mut(shard).remove(k);
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }

    /// How many shards this map shares with `other` (for tests).
    pub fn shared_with(&self, other: &Self) -> usize {
        self.shards
            .iter()
            .zip(other.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count()
    }
}

/// One immutable snapshot of all peers. Cloning it is cheap: it shares every shard.
#[derive(Debug, Default, Clone)]
pub struct PeerTable {
    by_key: Sharded<[u8; 32], Arc<Peer>>,
    by_addr: Sharded<Ipv4Addr, Arc<Peer>>,
    by_index: Sharded<u32, Arc<Peer>>,
    len: usize,
}

impl PeerTable {
    pub fn by_key(&self, key: &[u8; 32]) -> Option<&Arc<Peer>> {
        self.by_key.get(key)
    }

    pub fn by_address(&self, addr: Ipv4Addr) -> Option<&Arc<Peer>> {
        self.by_addr.get(&addr)
    }

    /// The peer owning a session index from a data, response or cookie message.
    pub fn by_receiver_index(&self, receiver_index: u32) -> Option<&Arc<Peer>> {
        self.by_index.get(&(receiver_index >> 8))
    }

    /// Whether a peer (current or being removed) holds this 24-bit index.
    pub fn has_index(&self, index: u32) -> bool {
        self.by_index.contains_key(&index)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.by_key.values()
    }

    /// Adds a peer; the caller has checked its key, address and index are free.
    pub(super) fn insert(&mut self, peer: Arc<Peer>) {
        self.by_addr.insert(peer.address, Arc::clone(&peer));
        self.by_index.insert(peer.index, Arc::clone(&peer));
        self.by_key.insert(peer.public_key, peer);
        self.len += 1;
    }

    /// Takes a peer of this table out of it.
    pub(super) fn remove(&mut self, peer: &Peer) {
        self.by_key.remove(&peer.public_key);
        self.by_addr.remove(&peer.address);
        self.by_index.remove(&peer.index);
        self.len = self.len.saturating_sub(1);
    }

    /// Shards of the key map this snapshot shares with `other` (out of [`SHARDS`]).
    pub fn shards_shared_with(&self, other: &PeerTable) -> usize {
        self.by_key.shared_with(&other.by_key)
    }
}
