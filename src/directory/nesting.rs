//! OpenLDAP's nested-group rule, apart from how each level is read: the walk from a user to
//! every group above them, and the map of `group_base` a sync pass reads once to walk it.
//!
//! The rule: the user's `memberOf` values, plus every group under `group_base` listing the user
//! or a group already found as `member` or `uniqueMember`, level after level until no new group
//! appears or `MAX_NESTING` levels were read (cycles are harmless: a group is taken once).
//! A login reads each level with a search of `group_base` (`ldap.rs`); a sync pass reads the
//! whole `member`/`uniqueMember` graph of `group_base` once ([`GroupMap`]) and walks it for
//! every user, without a directory round trip. Both feed the same [`Walk`], so they give the
//! same groups; DNs are matched in canonical form (`crate::dn`), as the directory matches them.

use std::collections::{HashMap, HashSet};

/// Nesting levels followed before giving up (a warning is logged).
pub(crate) const MAX_NESTING: usize = 10;

/// Case-insensitive key for comparing DNs as the server wrote them.
pub(crate) fn dn_key(dn: &str) -> String {
    crate::policy::normalize_dn(dn)
}

/// One user's walk up the groups: hand it the groups listing each level's DNs until
/// `next_level` says it is done, then `finish`.
pub(crate) struct Walk {
    user_dn: String,
    seen: HashSet<String>,
    groups: Vec<String>,
    next: Vec<String>,
    depth: usize,
}

impl Walk {
    /// Starts from the user's entry and their `memberOf` values (found already: level 0).
    pub(crate) fn new(user_dn: &str, member_of: Vec<String>) -> Walk {
        let mut walk = Walk {
            user_dn: user_dn.to_string(),
            seen: HashSet::new(),
            groups: Vec::new(),
            next: vec![user_dn.to_string()],
            depth: 0,
        };
        for g in member_of {
            if walk.seen.insert(dn_key(&g)) {
                walk.next.push(g.clone());
                walk.groups.push(g);
            }
        }
        walk
    }

    /// The DNs whose groups the next level reads; `None` when no new group appeared at the
    /// last level, or after `MAX_NESTING` levels (logged: deeper groups are ignored).
    pub(crate) fn next_level(&mut self) -> Option<Vec<String>> {
        if self.next.is_empty() {
            return None;
        }
        if self.depth == MAX_NESTING {
            tracing::warn!(user = %self.user_dn, "group nesting deeper than {MAX_NESTING} levels: deeper groups ignored");
            return None;
        }
        self.depth += 1;
        Some(std::mem::take(&mut self.next))
    }

    /// A group listing one of the current level's DNs (taken once, whatever its spelling).
    pub(crate) fn found(&mut self, group_dn: &str) {
        if self.seen.insert(dn_key(group_dn)) {
            self.next.push(group_dn.to_string());
            self.groups.push(group_dn.to_string());
        }
    }

    /// The groups found, as the server wrote them, sorted by canonical DN.
    pub(crate) fn finish(mut self) -> Vec<String> {
        self.groups.sort_by_key(|g| dn_key(g));
        self.groups
    }
}

/// Which groups of `group_base` list a DN as `member` or `uniqueMember`: the graph a sync pass
/// reads once, keyed by canonical DN.
#[derive(Debug, Default)]
pub(crate) struct GroupMap {
    /// Group DNs as the server wrote them.
    groups: Vec<String>,
    /// Canonical member DN → indexes in `groups` of the groups listing it.
    listed_in: HashMap<String, Vec<u32>>,
}

impl GroupMap {
    /// Records a group of `group_base` and its `member` and `uniqueMember` values.
    pub(crate) fn add_group<'a>(&mut self, dn: String, members: impl Iterator<Item = &'a str>) {
        let Ok(index) = u32::try_from(self.groups.len()) else {
            return;
        };
        self.groups.push(dn);
        for m in members {
            let listed = self.listed_in.entry(dn_key(m)).or_default();
            if listed.last() != Some(&index) {
                listed.push(index);
            }
        }
    }

    /// The groups listing `dn` (as `member` or `uniqueMember`).
    pub(crate) fn groups_listing<'a>(&'a self, dn: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.listed_in
            .get(&dn_key(dn))
            .into_iter()
            .flatten()
            .map(|&i| self.groups[i as usize].as_str())
    }

    /// Groups recorded.
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Every group above `user_dn` (with its `memberOf` values), by the same walk a login's
    /// searches take.
    pub(crate) fn groups_of(&self, user_dn: &str, member_of: Vec<String>) -> Vec<String> {
        let mut walk = Walk::new(user_dn, member_of);
        while let Some(level) = walk.next_level() {
            for dn in &level {
                for g in self.groups_listing(dn) {
                    walk.found(g);
                }
            }
        }
        walk.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "ou=groups,dc=t";

    fn g(cn: &str) -> String {
        format!("cn={cn},{BASE}")
    }

    /// Groups: paie ∋ alice; admin ∋ paie (as `CN=Paie`, another spelling); all ∋ admin, bob;
    /// cycle1 ∋ cycle2 ∋ cycle1 ∋ bob.
    fn map() -> GroupMap {
        let mut m = GroupMap::default();
        m.add_group(g("paie"), ["uid=alice,ou=people,dc=t"].into_iter());
        m.add_group(g("admin"), ["CN=Paie, OU=Groups,DC=t"].into_iter());
        let admin = g("admin");
        m.add_group(
            g("all"),
            [admin.as_str(), "uid=bob,ou=people,dc=t"].into_iter(),
        );
        let (c1, c2) = (g("cycle1"), g("cycle2"));
        m.add_group(
            c1.clone(),
            [c2.as_str(), "uid=bob,ou=people,dc=t"].into_iter(),
        );
        m.add_group(c2, [c1.as_str()].into_iter());
        m
    }

    #[test]
    fn nested_groups_in_any_spelling_and_cycles() {
        let m = map();
        assert_eq!(
            m.groups_of("UID=Alice,ou=people,dc=t", Vec::new()),
            [g("admin"), g("all"), g("paie")]
        );
        assert_eq!(
            m.groups_of("uid=bob,ou=people,dc=t", Vec::new()),
            [g("all"), g("cycle1"), g("cycle2")]
        );
        assert!(m
            .groups_of("uid=carol,ou=people,dc=t", Vec::new())
            .is_empty());
    }

    #[test]
    fn member_of_values_count_even_outside_the_base_and_are_walked() {
        let m = map();
        // carol is in paie through memberOf only (e.g. a group the search does not see), and
        // in a group outside group_base.
        let outside = "cn=elsewhere,dc=other".to_string();
        assert_eq!(
            m.groups_of(
                "uid=carol,ou=people,dc=t",
                vec![g("paie"), outside.clone(), g("PAIE")]
            ),
            [g("admin"), g("all"), outside, g("paie")]
        );
    }

    #[test]
    fn nesting_stops_after_the_limit() {
        // g0 ∋ user, g1 ∋ g0, …: the walk reads MAX_NESTING levels, so g0..g9 are found.
        let mut m = GroupMap::default();
        let names: Vec<String> = (0..15).map(|i| g(&format!("g{i:02}"))).collect();
        m.add_group(names[0].clone(), ["uid=u,dc=t"].into_iter());
        for i in 1..names.len() {
            let below = names[i - 1].clone();
            m.add_group(names[i].clone(), [below.as_str()].into_iter());
        }
        let found = m.groups_of("uid=u,dc=t", Vec::new());
        assert_eq!(found, names[..MAX_NESTING].to_vec());
        assert_eq!(m.len(), 15);
    }
}
