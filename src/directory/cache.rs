//! The login path's cache of resolved groups: a user's nested groups, reused for a short time.
//!
//! Resolving nested groups costs one directory search per nesting level (2–3 for most people),
//! on top of the user search and the password bind that every login needs, so it was most of a
//! login's directory work. A login reuses the groups resolved for the same entry less than `ttl`
//! ago, and only while the entry's `memberOf` — read afresh by every login's user search — is
//! unchanged. Freshness, then: the password bind, the disabled check and the direct memberships
//! kept in `memberOf` (OpenLDAP's memberof overlay on groupOfNames, Active Directory always) are
//! never cached; a change further up a nesting chain, or to a membership `memberOf` does not
//! show (groupOfUniqueNames), is seen within `ttl`. `lookup` (the directory sync, a session's
//! role refresh) always reads the directory and refreshes the cache.

use std::time::{Duration, Instant};

use hashlink::LruCache;
use parking_lot::Mutex;

/// People remembered at most; the least recently used are forgotten first.
const CAPACITY: usize = 65_536;
/// Longest reuse, whatever `sync_interval` says.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(60);

struct Cached {
    /// The entry's `memberOf` (normalised, sorted) when the groups were resolved.
    member_of: Vec<String>,
    groups: Vec<String>,
    resolved_at: Instant,
}

pub(crate) struct GroupCache {
    ttl: Duration,
    entries: Mutex<LruCache<String, Cached>>,
}

impl GroupCache {
    /// A cache keeping resolutions for `ttl` (zero: nothing is reused).
    pub(crate) fn new(ttl: Duration) -> GroupCache {
        GroupCache {
            ttl,
            entries: Mutex::new(LruCache::new(CAPACITY)),
        }
    }

    /// The groups resolved for `dn_key` less than `ttl` ago with the same `member_of`.
    pub(crate) fn get(&self, dn_key: &str, member_of: &[String]) -> Option<Vec<String>> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.entries.lock();
        let fresh = entries
            .get(dn_key)
            .is_some_and(|c| c.resolved_at.elapsed() < self.ttl && c.member_of == member_of);
        if fresh {
            entries.get(dn_key).map(|c| c.groups.clone())
        } else {
            entries.remove(dn_key);
            None
        }
    }

    /// Remembers the groups resolved for `dn_key` from a read that started at `resolved_at`.
    pub(crate) fn put(
        &self,
        dn_key: String,
        member_of: Vec<String>,
        groups: Vec<String>,
        resolved_at: Instant,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        self.entries.lock().insert(
            dn_key,
            Cached {
                member_of,
                groups,
                resolved_at,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reused_while_fresh_and_member_of_unchanged() {
        let c = GroupCache::new(Duration::from_secs(60));
        assert_eq!(c.get("uid=a", &v(&["cn=g"])), None, "empty");
        c.put(
            "uid=a".into(),
            v(&["cn=g"]),
            v(&["cn=g", "cn=parent"]),
            Instant::now(),
        );
        assert_eq!(
            c.get("uid=a", &v(&["cn=g"])),
            Some(v(&["cn=g", "cn=parent"]))
        );
        assert_eq!(c.get("uid=b", &v(&["cn=g"])), None, "another person");
        // A direct membership changed: the entry is dropped, not reused.
        assert_eq!(c.get("uid=a", &v(&["cn=g", "cn=h"])), None);
        assert_eq!(
            c.get("uid=a", &v(&["cn=g"])),
            None,
            "dropped on the mismatch"
        );
    }

    #[test]
    fn expires_after_ttl_and_zero_disables() {
        let c = GroupCache::new(Duration::from_millis(50));
        let old = Instant::now()
            .checked_sub(Duration::from_millis(60))
            .expect("monotonic clock past 60 ms");
        c.put("uid=a".into(), Vec::new(), v(&["cn=g"]), old);
        assert_eq!(c.get("uid=a", &[]), None, "read 60 ms ago, ttl 50 ms");
        c.put("uid=a".into(), Vec::new(), v(&["cn=g"]), Instant::now());
        assert_eq!(c.get("uid=a", &[]), Some(v(&["cn=g"])));

        let off = GroupCache::new(Duration::ZERO);
        off.put("uid=a".into(), Vec::new(), v(&["cn=g"]), Instant::now());
        assert_eq!(off.get("uid=a", &[]), None);
    }
}
