//! The peer table snapshot: three lookups (key, tunnel address, session index) over shared shards.
//!
//! Each map is split into [`SHARDS`] shards behind their own `Arc`. A new snapshot starts as a
//! copy of the old one's shard pointers; changing one peer copies only the shards it lands in
//! (about 1/64 of each map), so the control plane's small changes stay cheap with 10,000 peers.
//! A map's slots hold only the `Arc<Peer>` (8 bytes): the key is read from the peer itself
//! (hashbrown's `HashTable`), not stored a second time next to it.

use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hashbrown::HashTable;

use super::peers::Peer;
use crate::key::PublicKey;

/// Shards per map: a power of two.
pub const SHARDS: usize = 64;

/// The maps' hasher: foldhash (hashbrown's default), seeded once per table and shared by its
/// snapshots so that they agree on every slot.
type Hasher = foldhash::fast::RandomState;

/// One way to look a peer up: the key it is found by, and which shard that key lives in.
pub trait Lookup {
    type Key: Copy + Eq + Hash;
    fn key(peer: &Peer) -> Self::Key;
    fn shard(key: &Self::Key) -> usize;
}

/// By public key. Keys are random curve points: their bytes spread evenly over the shards.
#[derive(Debug)]
pub struct ByKey;
/// By tunnel address (handed out in sequence).
#[derive(Debug)]
pub struct ByAddress;
/// By the 24-bit session index (handed out in sequence).
#[derive(Debug)]
pub struct ByIndex;

impl Lookup for ByKey {
    type Key = PublicKey;
    fn key(peer: &Peer) -> PublicKey {
        peer.public_key
    }
    fn shard(key: &PublicKey) -> usize {
        let b = key.as_bytes();
        usize::from(b[0] ^ b[31]) & (SHARDS - 1)
    }
}

impl Lookup for ByAddress {
    type Key = Ipv4Addr;
    fn key(peer: &Peer) -> Ipv4Addr {
        peer.address
    }
    fn shard(key: &Ipv4Addr) -> usize {
        (u32::from(*key) as usize) & (SHARDS - 1)
    }
}

impl Lookup for ByIndex {
    type Key = u32;
    fn key(peer: &Peer) -> u32 {
        peer.index
    }
    fn shard(key: &u32) -> usize {
        (*key as usize) & (SHARDS - 1)
    }
}

/// A map of peers split into copy-on-write shards.
#[derive(Debug)]
pub struct Sharded<L> {
    shards: Box<[Arc<HashTable<Arc<Peer>>>]>,
    hasher: Hasher,
    lookup: PhantomData<L>,
}

impl<L> Clone for Sharded<L> {
    fn clone(&self) -> Self {
        Sharded {
            shards: self.shards.clone(),
            hasher: self.hasher,
            lookup: PhantomData,
        }
    }
}

impl<L> Default for Sharded<L> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Arc::new(HashTable::new())).collect(),
            hasher: Hasher::default(),
            lookup: PhantomData,
        }
    }
}

impl<L: Lookup> Sharded<L> {
    pub fn get(&self, k: &L::Key) -> Option<&Arc<Peer>> {
        self.shards[L::shard(k)].find(self.hasher.hash_one(k), |p| L::key(p) == *k)
    }

    pub fn contains_key(&self, k: &L::Key) -> bool {
        self.get(k).is_some()
    }

    /// Adds a peer whose key is not in the map; copies its shard first if another snapshot
    /// still shares it.
    pub fn insert(&mut self, peer: Arc<Peer>) {
        let k = L::key(&peer);
        let hasher = &self.hasher;
        Arc::make_mut(&mut self.shards[L::shard(&k)]).insert_unique(
            hasher.hash_one(k),
            peer,
            |p| hasher.hash_one(L::key(p)),
        );
    }

    pub fn remove(&mut self, k: &L::Key) {
        let hash = self.hasher.hash_one(k);
        let shard = &mut self.shards[L::shard(k)];
        if shard.find(hash, |p| L::key(p) == *k).is_some() {
            if let Ok(entry) = Arc::make_mut(shard).find_entry(hash, |p| L::key(p) == *k) {
                entry.remove();
            }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.shards.iter().flat_map(|s| s.iter())
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
    by_key: Sharded<ByKey>,
    by_addr: Sharded<ByAddress>,
    by_index: Sharded<ByIndex>,
    len: usize,
}

impl PeerTable {
    pub fn by_key(&self, key: &PublicKey) -> Option<&Arc<Peer>> {
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
        self.by_addr.insert(Arc::clone(&peer));
        self.by_index.insert(Arc::clone(&peer));
        self.by_key.insert(peer);
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
