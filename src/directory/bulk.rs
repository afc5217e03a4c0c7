//! A sync pass's reads (`Directory::lookup_many`): the answers `lookup` gives, user by user,
//! from a few searches: the entries `USER_BATCH` logins per search, then, on OpenLDAP, the
//! groups of `group_base` read once and walked for every user (`nesting`).
//!
//! One lookup costs a user search plus one search per nesting level (three for most people),
//! so a pass over 100,000 users was 300,000 round trips resolving the same few groups again
//! and again. Users: where the configured filter only matches entries carrying the login
//! (`filter::batchable`: `(uid={username})`, or that clause in a top-level AND), a batch is one
//! search of the filters of its logins OR-ed, `(|(uid=a)(uid=b)…)`, and each entry goes to the
//! login its uid / sAMAccountName carries: no entry, one, or several (refused), as `lookup`
//! would find. A batch cut by a size limit, or holding an entry that carries none of its
//! logins, is read one login per search, as is every login under any other filter. Groups:
//! the whole `member`/`uniqueMember` graph of `group_base` in one paged search; if the
//! directory does not return it whole (a size or administrative limit: OpenLDAP's default
//! `size.prtotal` is the 500-entry size limit), the walk reads each user's own groups with one
//! search and each group's parents once for the whole pass. Active Directory resolves nesting
//! itself: one in-chain search per user, as before.

use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use ldap3::{Scope, SearchEntry};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OnceCell;

use super::{attr_values, describe_entry, member_of_key, LdapDirectory};
use crate::config::DirectoryKind;
use crate::directory::conn::{RC_NO_SUCH_OBJECT, RC_SIZE_LIMIT, RC_SUCCESS};
use crate::directory::filter::{batchable, member_filter, user_filter, validate_username};
use crate::directory::nesting::{dn_key, GroupMap, Walk};
use crate::directory::{DirectoryError, DirectoryUser, Unavailable};

/// Logins per user search of a pass (one `(|…)` filter): a page of entries well under the
/// default size limit of OpenLDAP (500) and AD (1,000).
pub(crate) const USER_BATCH: usize = 100;
/// Groups per page when a pass reads `group_base`.
const GROUP_PAGE: i32 = 500;
/// Users whose groups are walked in memory between two yields to the runtime.
const YIELD_EVERY: usize = 512;
/// The groups a pass reads: every entry of `group_base` that lists someone.
const GROUPS_FILTER: &str = "(|(member=*)(uniqueMember=*))";

/// A user entry found by a pass, reduced to what it needs (the user without groups yet, and the
/// entry's `memberOf`): 100,000 ldap3 entries, attribute maps and all, would weigh several times
/// as much until every group is resolved.
#[derive(Clone)]
struct Found {
    user: DirectoryUser,
    member_of: Vec<String>,
}

/// The groups of `group_base` listing each group DN, read once per pass when the whole graph
/// could not be (canonical DN → groups as written).
#[derive(Default)]
struct Parents(Mutex<HashMap<String, Arc<OnceCell<Listing>>>>);

/// The groups listing one DN, as the server wrote them.
type Listing = Arc<[String]>;

impl LdapDirectory {
    /// Every user of `usernames` as `lookup` would answer, `in_flight` searches at a time.
    pub(super) async fn lookup_many_inner(
        &self,
        usernames: &[String],
        in_flight: usize,
    ) -> Result<Vec<Option<DirectoryUser>>, DirectoryError> {
        let in_flight = in_flight.max(1);
        // Indexes, not borrowed slices, go through the streams: a closure taking a reference
        // does not prove `Send` for every lifetime (the trait's future must be `Send`).
        let entries: Vec<Option<Found>> = stream::iter((0..usernames.len()).step_by(USER_BATCH))
            .map(|start| {
                let end = usernames.len().min(start + USER_BATCH);
                self.find_users(&usernames[start..end])
            })
            .buffered(in_flight)
            .try_concat()
            .await?;
        let found = entries.iter().flatten().count();
        let started = Instant::now();
        let map = match self.kind {
            DirectoryKind::OpenLdap if found > 0 => self.read_groups().await?,
            _ => None,
        };
        tracing::debug!(
            users = usernames.len(),
            found,
            groups = map.as_ref().map(GroupMap::len),
            "directory read for a sync pass"
        );
        let memo = Parents::default();
        let (map, memo) = (&map, &memo);
        stream::iter(entries.into_iter().enumerate())
            .map(|(i, found)| async move {
                // Walking the map never waits: without a yield now and then, 100,000 users
                // would hold a runtime thread that logins need for a second.
                if i % YIELD_EVERY == YIELD_EVERY - 1 {
                    tokio::task::yield_now().await;
                }
                let Some(Found {
                    mut user,
                    member_of,
                }) = found
                else {
                    return Ok(None);
                };
                let key = member_of_key(&member_of);
                user.groups = match (self.kind, map) {
                    (DirectoryKind::OpenLdap, Some(map)) => map.groups_of(&user.dn, member_of),
                    (DirectoryKind::OpenLdap, None) => {
                        self.deadline(self.walk_with(memo, &user.dn, member_of))
                            .await?
                    }
                    (DirectoryKind::ActiveDirectory, _) => {
                        self.deadline(self.ad_groups(&user.dn)).await?
                    }
                };
                self.groups
                    .put(dn_key(&user.dn), key, user.groups.clone(), started);
                Ok(Some(user))
            })
            .buffered(in_flight)
            .try_collect()
            .await
    }

    /// OpenLDAP's walk (`nesting::Walk`) with each DN's groups searched once per pass: a user's
    /// own entry costs one search, each group reached one for the whole pass (`memo`).
    async fn walk_with(
        &self,
        memo: &Parents,
        user_dn: &str,
        member_of: Vec<String>,
    ) -> Result<Vec<String>, DirectoryError> {
        let user_key = dn_key(user_dn);
        let mut walk = Walk::new(user_dn, member_of);
        while let Some(level) = walk.next_level() {
            for dn in level {
                let key = dn_key(&dn);
                let search = async {
                    let (entries, rc) = self
                        .service
                        .search(
                            &self.group_base,
                            Scope::Subtree,
                            &member_filter(&[&dn]),
                            &["1.1"],
                            0,
                        )
                        .await?;
                    self.check_base_rc(rc, "group_base", &self.group_base)?;
                    Ok::<Listing, DirectoryError>(entries.into_iter().map(|e| e.dn).collect())
                };
                let listing = if key == user_key {
                    search.await?
                } else {
                    // Users resolved at the same time wait for one search of a group.
                    let cell = Arc::clone(memo.0.lock().entry(key).or_default());
                    Arc::clone(cell.get_or_try_init(|| search).await?)
                };
                for g in listing.iter() {
                    walk.found(g);
                }
            }
        }
        Ok(walk.finish())
    }

    /// What a pass keeps of an entry found for `typed`.
    fn found(&self, entry: &SearchEntry, typed: &str) -> Found {
        Found {
            user: describe_entry(self.kind, entry, typed),
            member_of: attr_values(entry, "memberOf"),
        }
    }

    /// The users of one batch of logins, in their order (`None`: not found, or ambiguous).
    async fn find_users(&self, names: &[String]) -> Result<Vec<Option<Found>>, DirectoryError> {
        let mut out: Vec<Option<Found>> = vec![None; names.len()];
        let valid: Vec<usize> = (0..names.len())
            .filter(|&i| validate_username(&names[i]).is_ok())
            .collect();
        let matched = if valid.is_empty() {
            return Ok(out);
        } else if batchable(&self.user_filter, self.login_attr()) {
            self.search_batch(names, &valid).await?
        } else {
            None
        };
        for &i in &valid {
            match matched
                .as_ref()
                .map(|m| m.get(&i).map_or(&[][..], Vec::as_slice))
            {
                // The entries F(login) matches are exactly those carrying the login.
                Some([]) => {}
                Some([one]) => out[i] = Some(self.found(one, &names[i])),
                // Several (refused, and logged, by the lookup), or not sure: the lookup's own
                // search decides.
                _ => {
                    let entry = self.deadline(self.find_user(&names[i])).await?;
                    out[i] = entry.map(|e| self.found(&e, &names[i]));
                }
            }
        }
        Ok(out)
    }

    /// One search for the `valid` logins of `names`: the entries carrying each login; `None`
    /// if the answer is not sure (cut by a size limit, or an entry carrying none of the logins).
    async fn search_batch(
        &self,
        names: &[String],
        valid: &[usize],
    ) -> Result<Option<HashMap<usize, Vec<SearchEntry>>>, DirectoryError> {
        let mut filter = String::from("(|");
        for &i in valid {
            filter.push_str(&user_filter(&self.user_filter, &names[i]));
        }
        filter.push(')');
        let (entries, rc) = self
            .deadline(async {
                self.service
                    .search(
                        &self.user_base,
                        Scope::Subtree,
                        &filter,
                        self.user_attrs(),
                        0,
                    )
                    .await
            })
            .await?;
        self.check_base_rc(rc, "user_base", &self.user_base)?;
        if rc != RC_SUCCESS {
            return Ok(None);
        }
        Ok(attribute(self.login_attr(), entries, valid, names))
    }

    /// The `member`/`uniqueMember` graph of `group_base`; `None` if the directory did not
    /// return it whole.
    async fn read_groups(&self) -> Result<Option<GroupMap>, DirectoryError> {
        let mut map = GroupMap::default();
        let rc = self
            .service
            .paged_search(
                &self.group_base,
                GROUPS_FILTER,
                &["member", "uniqueMember"],
                GROUP_PAGE,
                |entry| {
                    let members = entry
                        .attrs
                        .iter()
                        .filter(|(k, _)| {
                            k.eq_ignore_ascii_case("member")
                                || k.eq_ignore_ascii_case("uniqueMember")
                        })
                        .flat_map(|(_, v)| v.iter().map(String::as_str));
                    map.add_group(entry.dn.clone(), members);
                },
            )
            .await?;
        match rc {
            RC_SUCCESS => Ok(Some(map)),
            RC_NO_SUCH_OBJECT => Err(Unavailable::MissingBase {
                url: self.url.clone(),
                key: "group_base",
                base: self.group_base.clone(),
            }
            .into()),
            rc => {
                tracing::warn!(
                    rc,
                    size_limit = rc == RC_SIZE_LIMIT,
                    groups = map.len(),
                    "the directory did not return group_base whole in one paged search: this sync pass reads each user's groups on their own"
                );
                Ok(None)
            }
        }
    }
}

/// For each login (index in `names`, among `valid`), the entries whose login attribute carries
/// it (ASCII case-insensitively, as uid and sAMAccountName compare; a login differing otherwise
/// is not matched, and its entry then carries none); `None` if an entry carries none of the
/// batch's logins (each login is then looked up alone).
fn attribute(
    login_attr: &str,
    entries: Vec<SearchEntry>,
    valid: &[usize],
    names: &[String],
) -> Option<HashMap<usize, Vec<SearchEntry>>> {
    let mut by_login: HashMap<String, Vec<usize>> = HashMap::new();
    for &i in valid {
        by_login
            .entry(names[i].to_ascii_lowercase())
            .or_default()
            .push(i);
    }
    let mut matched: HashMap<usize, Vec<SearchEntry>> = HashMap::new();
    for entry in entries {
        let mut logins: Vec<usize> = attr_values(&entry, login_attr)
            .iter()
            .filter_map(|login| by_login.get(&login.to_ascii_lowercase()))
            .flatten()
            .copied()
            .collect();
        if logins.is_empty() {
            return None;
        }
        logins.sort_unstable();
        logins.dedup();
        for i in logins {
            matched.entry(i).or_default().push(entry.clone());
        }
    }
    Some(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dn: &str, uids: &[&str]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: [(
                "uid".to_string(),
                uids.iter().map(|s| s.to_string()).collect(),
            )]
            .into_iter()
            .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entries_go_to_the_login_they_carry() {
        let n = names(&["alice", "Bob", "carol", "bad\nname"]);
        let e = vec![
            entry("uid=bob,dc=t", &["bob"]),
            entry("uid=alice,dc=t", &["ALICE", "alice"]),
        ];
        let m = attribute("uid", e, &[0, 1, 2], &n).expect("all carried");
        let dns = |i: usize| {
            m.get(&i)
                .map(|v| v.iter().map(|e| e.dn.as_str()).collect::<Vec<_>>())
        };
        assert_eq!(
            dns(0),
            Some(vec!["uid=alice,dc=t"]),
            "one entry, even with two spellings"
        );
        assert_eq!(dns(1), Some(vec!["uid=bob,dc=t"]), "case-insensitive");
        assert_eq!(dns(2), None, "carol: no entry");
    }

    #[test]
    fn duplicates_and_strangers() {
        let n = names(&["alice", "bob"]);
        let dup = vec![
            entry("uid=alice,ou=a,dc=t", &["alice"]),
            entry("uid=alice,ou=b,dc=t", &["alice"]),
        ];
        let m = attribute("uid", dup, &[0, 1], &n).expect("carried");
        assert_eq!(
            m.get(&0).map(Vec::len),
            Some(2),
            "two entries: the lookup refuses"
        );
        let stranger = vec![
            entry("uid=alice,dc=t", &["alice"]),
            entry("uid=mallory,dc=t", &["mallory"]),
        ];
        assert!(attribute("uid", stranger, &[0, 1], &n).is_none());
        let no_login = vec![entry("cn=x,dc=t", &[])];
        assert!(attribute("uid", no_login, &[0, 1], &n).is_none());
        // Not ASCII-equal: not matched, so the entry carries no login of the batch.
        let accent = vec![entry("uid=élise,dc=t", &["ÉLISE"])];
        assert!(attribute("uid", accent, &[0], &names(&["élise"])).is_none());
    }
}
