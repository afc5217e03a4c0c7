//! The site gateways' feed: per site, the peers its gateway must admit, a version, a bounded
//! ring of recent changes and a wake-up for long-polls. The control plane publishes the sets
//! (whole, or the peers of the devices a change concerns); the feed route reads them here.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::watch;

use crate::api::feed::{FeedPeer, FeedResource, FeedUpdate};

/// Changes kept per site: a gateway further behind gets the full set.
pub const CHANGE_RING: usize = 65_536;

/// What one site's gateway must serve: its resources and the devices granted one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteSet {
    pub resources: Vec<FeedResource>,
    pub peers: Vec<FeedPeer>,
}

/// One site's feed state.
struct SiteFeed {
    version: u64,
    /// `since` below this cannot be answered with changes (they left the ring).
    floor: u64,
    resources: Vec<FeedResource>,
    peers: BTreeMap<String, FeedPeer>,
    /// `(version, key)`: the peer with that key changed (upserted or removed) at that version;
    /// no key: the resources changed.
    changes: VecDeque<(u64, Option<String>)>,
    wake: watch::Sender<u64>,
}

impl SiteFeed {
    fn new(base: u64) -> Self {
        SiteFeed {
            version: base,
            floor: base,
            resources: Vec::new(),
            peers: BTreeMap::new(),
            changes: VecDeque::new(),
            wake: watch::channel(base).0,
        }
    }

    fn bump(&mut self, key: Option<String>, ring: usize) {
        self.version += 1;
        self.changes.push_back((self.version, key));
        while self.changes.len() > ring {
            if let Some((v, _)) = self.changes.pop_front() {
                self.floor = v;
            }
        }
    }

    /// Moves to `set`, one version per changed peer; true if anything changed.
    fn apply(&mut self, set: SiteSet, ring: usize) -> bool {
        let before = self.version;
        if self.resources != set.resources {
            self.resources = set.resources;
            self.bump(None, ring);
        }
        let mut next: BTreeMap<String, FeedPeer> = set
            .peers
            .into_iter()
            .map(|p| (p.public_key.clone(), p))
            .collect();
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.peers.remove(&key);
            self.bump(Some(key), ring);
        }
        for (key, peer) in std::mem::take(&mut next) {
            if self.peers.get(&key) != Some(&peer) {
                self.peers.insert(key.clone(), peer);
                self.bump(Some(key), ring);
            }
        }
        self.version != before
    }

    /// The answer to a gateway at `since`.
    fn answer(&self, site: &str, generation: &str, since: Option<u64>, now_ms: i64) -> FeedUpdate {
        let mut update = FeedUpdate {
            site: site.to_string(),
            generation: generation.to_string(),
            version: self.version,
            full: true,
            resources: self.resources.clone(),
            peers: Vec::new(),
            removed: Vec::new(),
            server_time_ms: now_ms,
            mfa_idle_ms: None,
        };
        match since.filter(|s| *s >= self.floor && *s <= self.version) {
            None => update.peers = self.peers.values().cloned().collect(),
            Some(since) => {
                update.full = false;
                let changed: std::collections::BTreeSet<&String> = self
                    .changes
                    .iter()
                    .filter(|(v, _)| *v > since)
                    .filter_map(|(_, k)| k.as_ref())
                    .collect();
                for key in changed {
                    match self.peers.get(key) {
                        Some(p) => update.peers.push(p.clone()),
                        None => update.removed.push(key.clone()),
                    }
                }
            }
        }
        update
    }
}

/// Every site's feed, for one portal process (its generation is random at start).
pub struct FeedHub {
    generation: String,
    /// Where versions start: random, so a `since` from another portal (another generation)
    /// almost surely falls outside this hub's range and gets the full set.
    base: u64,
    ring: usize,
    sites: parking_lot::Mutex<HashMap<String, SiteFeed>>,
}

impl Default for FeedHub {
    fn default() -> Self {
        Self::new()
    }
}

impl FeedHub {
    pub fn new() -> Self {
        Self::with_ring(CHANGE_RING)
    }

    /// A hub keeping `ring` changes per site (tests: a small ring).
    pub fn with_ring(ring: usize) -> Self {
        let mut bytes = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        FeedHub {
            generation: hex::encode(bytes),
            base: u64::from_le_bytes(bytes) >> 20,
            ring: ring.max(1),
            sites: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// Puts each site's new set in force (every configured site is in `sets`, maybe empty; a
    /// site no longer configured is dropped) and wakes the long-polls of the sites that changed.
    pub fn publish(&self, sets: BTreeMap<String, SiteSet>) {
        let mut sites = self.sites.lock();
        sites.retain(|name, _| sets.contains_key(name));
        for (name, set) in sets {
            let feed = sites
                .entry(name)
                .or_insert_with(|| SiteFeed::new(self.base));
            if feed.apply(set, self.ring) {
                feed.wake.send_replace(feed.version);
            }
        }
    }

    /// Moves the peers with these keys (base64) to what `sets` says of them, in every site at
    /// once: upserted where `sets` has them, removed from the sites where it has them no longer
    /// (every site for a key `sets` does not name). The other peers stay, and so do the
    /// resources: one device's change (revoked, rotated, its user's groups, its window) without
    /// the whole computation. Only the sites whose set changed move version and wake their
    /// long-polls; sites the hub does not feed yet are left to the next whole publication.
    /// Returns how many sites changed.
    pub fn replace_peers(&self, keys: &BTreeSet<String>, sets: BTreeMap<String, SiteSet>) -> usize {
        let mut sites = self.sites.lock();
        let mut wanted: HashMap<String, BTreeMap<String, FeedPeer>> = HashMap::new();
        let mut keys = keys.clone();
        for (name, set) in sets {
            let peers = wanted.entry(name).or_default();
            for peer in set.peers {
                keys.insert(peer.public_key.clone());
                peers.insert(peer.public_key.clone(), peer);
            }
        }
        let mut changed = 0;
        for (name, feed) in sites.iter_mut() {
            let before = feed.version;
            let want = wanted.get(name);
            for key in &keys {
                match want.and_then(|w| w.get(key)) {
                    Some(peer) if feed.peers.get(key) != Some(peer) => {
                        feed.peers.insert(key.clone(), peer.clone());
                        feed.bump(Some(key.clone()), self.ring);
                    }
                    Some(_) => {}
                    None => {
                        if feed.peers.remove(key).is_some() {
                            feed.bump(Some(key.clone()), self.ring);
                        }
                    }
                }
            }
            if feed.version != before {
                feed.wake.send_replace(feed.version);
                changed += 1;
            }
        }
        changed
    }

    /// The answer for `site` at `since` now; `None` for a site the hub does not feed.
    pub fn update(&self, site: &str, since: Option<u64>, now_ms: i64) -> Option<FeedUpdate> {
        let sites = self.sites.lock();
        let feed = sites.get(site)?;
        Some(feed.answer(site, &self.generation, since, now_ms))
    }

    /// Like [`FeedHub::update`], but when `since` is current, waits up to `wait` for a change.
    /// A `since` of another generation never matches (the caller passes it only when its
    /// generation is this hub's).
    pub async fn wait_update(
        &self,
        site: &str,
        since: Option<u64>,
        wait: Duration,
        now_ms: impl Fn() -> i64,
    ) -> Option<FeedUpdate> {
        let mut rx = {
            let sites = self.sites.lock();
            let feed = sites.get(site)?;
            if since != Some(feed.version) {
                return Some(feed.answer(site, &self.generation, since, now_ms()));
            }
            feed.wake.subscribe()
        };
        let _ = tokio::time::timeout(wait, rx.wait_for(|v| Some(*v) != since)).await;
        self.update(site, since, now_ms())
    }
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
