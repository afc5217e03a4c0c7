//! The access review: who can reach a resource now (or what a user's devices can reach), read from the policy and the store, a page at a time.
//!
//! The one implementation behind `GET /api/v1/audit/access-review`, `sesame audit
//! access-review` and the page; its answer types are the audit's (`crate::audit::review`).
//! It reads only the subject's devices: a user's own, or for a resource those of the members
//! of the groups granting it who are VPN users (`store::review`), from a cursor; the rule
//! itself ([`reachable`]) is applied here to every row read, whatever read it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::audit::review::{
    FactorSeen, FlowSeen, Review, ReviewCursor, ReviewEntry, ReviewSubject, SessionSeen, Slot, Via,
};
use crate::audit::QueryError;
use crate::config::{Config, StaticPeer, LOCAL_SITE};
use crate::policy::{normalize_dn, Policy};
use crate::store::{normalize_username, DeviceWithUser, GrantedTo, Store, StoreError};

use super::roles::has_role;

/// The subject from the `resource` / `user` / `site` parameters: exactly one must be given (a
/// user as the store keeps uids; `local` in any case as [`LOCAL_SITE`]).
pub fn subject(
    resource: Option<&str>,
    user: Option<&str>,
    site: Option<&str>,
) -> Result<ReviewSubject, QueryError> {
    fn set(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|s| !s.is_empty())
    }
    match (set(resource), set(user), set(site)) {
        (Some(r), None, None) => Ok(ReviewSubject::Resource(r.to_string())),
        (None, Some(u), None) => Ok(ReviewSubject::User(normalize_username(u))),
        (None, None, Some(s)) if s.eq_ignore_ascii_case(LOCAL_SITE) => {
            Ok(ReviewSubject::Site(LOCAL_SITE.to_string()))
        }
        (None, None, Some(s)) => Ok(ReviewSubject::Site(s.to_string())),
        _ => Err(QueryError::ReviewSubject),
    }
}

/// The site whose gateway serves `resource`: its `[[resource]] site`, [`LOCAL_SITE`] when it
/// has none (`sesame serve`'s own gateway) or is no longer configured.
pub fn resource_site(policy: &Policy, resource: &str) -> String {
    policy
        .resource(resource)
        .map(|r| r.site.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(LOCAL_SITE)
        .to_string()
}

/// What the review needs from the configuration.
pub struct ReviewPolicy<'a> {
    pub policy: &'a Policy,
    pub vpn_users: &'a [String],
    pub static_peers: &'a [StaticPeer],
}

impl<'a> ReviewPolicy<'a> {
    /// The configuration's policy, `[roles] vpn_users` and `[[peer]]`s.
    pub fn of(config: &'a Config) -> Self {
        ReviewPolicy {
            policy: &config.policy,
            vpn_users: &config.roles.vpn_users,
            static_peers: &config.peers,
        }
    }

    /// The resources the subject's entries are about, by name (the answer's order); a user's
    /// review is about every resource.
    fn resources_of(&self, subject: &ReviewSubject) -> Vec<String> {
        let names = self.policy.resources().map(|r| r.name.clone());
        let mut out: Vec<String> = match subject {
            ReviewSubject::Resource(r) => vec![r.clone()],
            ReviewSubject::User(_) => names.collect(),
            ReviewSubject::Site(s) => names
                .filter(|r| resource_site(self.policy, r) == *s)
                .collect(),
        };
        out.sort();
        out
    }

    /// The groups (normalized DNs) a `[[grant]]` gives `resource` to: whose members the
    /// resource's review reads.
    fn granting(&self, resource: &str) -> Vec<String> {
        self.policy
            .grants()
            .filter(|(_, names)| names.contains(resource))
            .map(|(group, _)| group.to_string())
            .collect()
    }
}

/// Why a review failed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which part of the answer to give.
#[derive(Debug, Clone, Default)]
pub struct PageAsk {
    /// Start after this entry (`None`: from the first).
    pub after: Option<ReviewCursor>,
    /// At most this many entries (`None`: every one).
    pub limit: Option<usize>,
}

/// What an entry is, before its last session, flow and factor are read.
enum Reach {
    Device(Box<DeviceWithUser>),
    /// A `[[peer]]`, by index.
    Peer(usize),
}

/// An entry in the answer's order: where it stands, and what it is.
struct Placed {
    at: ReviewCursor,
    reach: Reach,
}

/// How long a resource's count is trusted while the change log stands still: it bounds what a
/// change the log does not record can leave stale (`user_groups` rows rewritten alone, as the
/// first sync after migration 0008 rewrites the rows it filled).
const COUNT_TTL: Duration = Duration::from_secs(30);

/// A count's key: the granting groups and the VPN users' groups it was read through.
type CountKey = (Vec<String>, Vec<String>);

/// The counts behind the review's `total`, per state of the peer set: a resource's devices are
/// counted again only once the change log (`peer_changes`: every change of a device, of a
/// user's groups or disabled flag, written in the change's own transaction by any process) has
/// moved, or after [`COUNT_TTL`]. Counting the 10,000 devices of a resource at 100,000 takes
/// 70–90 ms, its page of 100 about 10 (bench/SCALEOUT_REPORT.md).
#[derive(Default)]
pub struct ReviewCounts {
    /// By (granting groups, VPN users' groups): the log's sequence, when, how many.
    seen: Mutex<HashMap<CountKey, (i64, Instant, u64)>>,
}

impl ReviewCounts {
    /// The count of `to` at the log's sequence `seq` (read before: a change committed after it
    /// moves the sequence past the one the count is kept under).
    async fn count(&self, store: &Store, to: GrantedTo<'_>, seq: i64) -> Result<u64, StoreError> {
        let key = (to.granting.to_vec(), to.vpn_users.to_vec());
        let kept = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        if let Some((at_seq, at, n)) = kept {
            if at_seq == seq && at.elapsed() < COUNT_TTL {
                return Ok(n);
            }
        }
        let n = store.review_granted_count(to).await?;
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (seq, Instant::now(), n));
        Ok(n)
    }
}

/// Runs the review: the same rule as the gateway's desired peer set (an active device of a
/// `vpn_users` member reaches the union of its user's groups' grants; a static peer its listed
/// resources), read from the store's devices and the groups seen at the last sync or login.
/// Gives the entries after `ask.after`, at most `ask.limit`, with the count of all of them and
/// the cursor of the next page.
pub async fn access_review(
    store: &Store,
    cfg: &ReviewPolicy<'_>,
    subject: &ReviewSubject,
    ask: &PageAsk,
) -> Result<Review, ReviewError> {
    Ok(answer(store, cfg, subject, ask, None).await?.0)
}

/// [`access_review`] with the resources' counts kept in `counts` while the peer set does not
/// change (the portal's and the CLI's).
pub async fn access_review_counted(
    store: &Store,
    cfg: &ReviewPolicy<'_>,
    subject: &ReviewSubject,
    ask: &PageAsk,
    counts: &ReviewCounts,
) -> Result<Review, ReviewError> {
    Ok(answer(store, cfg, subject, ask, Some(counts)).await?.0)
}

/// [`access_review`], and where the next page starts.
async fn answer(
    store: &Store,
    cfg: &ReviewPolicy<'_>,
    subject: &ReviewSubject,
    ask: &PageAsk,
    counts: Option<&ReviewCounts>,
) -> Result<(Review, Option<ReviewCursor>), ReviewError> {
    if let ReviewSubject::Resource(r) = subject {
        if cfg.policy.resource(r).is_none() {
            return Err(QueryError::UnknownResource(r.clone()).into());
        }
    }
    let limit = ask.limit.unwrap_or(usize::MAX);
    let after = ask.after.as_ref();
    let (mut placed, total) = match subject {
        ReviewSubject::User(u) => user_page(store, cfg, u, after, limit).await?,
        ReviewSubject::Resource(_) | ReviewSubject::Site(_) => {
            let resources = cfg.resources_of(subject);
            let counts = match counts {
                Some(c) => Some((c, store.peer_change_seq().await?)),
                None => None,
            };
            resources_page(store, cfg, &resources, after, limit, counts).await?
        }
    };
    let next = if placed.len() > limit {
        placed.truncate(limit);
        placed.last().map(|p| p.at.clone())
    } else {
        None
    };
    let entries = entries(store, cfg, subject, placed).await?;
    let (resource, user, site) = match subject {
        ReviewSubject::Resource(r) => (Some(r.clone()), None, None),
        ReviewSubject::User(u) => (None, Some(u.clone()), None),
        ReviewSubject::Site(s) => (None, None, Some(s.clone())),
    };
    let review = Review {
        resource,
        user,
        site,
        entries,
        total,
        next_cursor: next.as_ref().map(ReviewCursor::encode),
    };
    Ok((review, next))
}

/// A user's entries after `after`, at most `limit + 1` (one more says there is a next page),
/// and how many there are: the user's few devices are read whole.
async fn user_page(
    store: &Store,
    cfg: &ReviewPolicy<'_>,
    username: &str,
    after: Option<&ReviewCursor>,
    limit: usize,
) -> Result<(Vec<Placed>, u64), StoreError> {
    let subject = ReviewSubject::User(username.to_string());
    let rows = store.review_user_devices(username).await?;
    let mut all: Vec<Placed> = Vec::new();
    for (d, resources) in reachable(rows, cfg, &subject) {
        for resource in resources {
            all.push(Placed {
                at: ReviewCursor {
                    resource,
                    slot: Slot::Device(d.device.id),
                },
                reach: Reach::Device(Box::new(d.clone())),
            });
        }
    }
    all.sort_by(|a, b| a.at.cmp(&b.at));
    let total = all.len() as u64;
    let page = all
        .into_iter()
        .filter(|p| after.is_none_or(|a| p.at > *a))
        .take(limit.saturating_add(1))
        .collect();
    Ok((page, total))
}

/// The entries of `resources` (by name) after `after`, at most `limit + 1`, and how many there
/// are: per resource its static peers, then its devices read by id from the cursor, a page at
/// a time, until the page is full.
async fn resources_page(
    store: &Store,
    cfg: &ReviewPolicy<'_>,
    resources: &[String],
    after: Option<&ReviewCursor>,
    limit: usize,
    counts: Option<(&ReviewCounts, i64)>,
) -> Result<(Vec<Placed>, u64), StoreError> {
    let vpn_users: Vec<String> = cfg.vpn_users.iter().map(|g| normalize_dn(g)).collect();
    let want = limit.saturating_add(1);
    let mut total = 0u64;
    let mut out: Vec<Placed> = Vec::new();
    for resource in resources {
        let granting = cfg.granting(resource);
        let to = GrantedTo {
            granting: &granting,
            vpn_users: &vpn_users,
        };
        let peers: Vec<usize> = (0..cfg.static_peers.len())
            .filter(|i| cfg.static_peers[*i].resources.contains(resource))
            .collect();
        let count = match counts {
            Some((kept, seq)) => kept.count(store, to, seq).await?,
            None => store.review_granted_count(to).await?,
        };
        total += peers.len() as u64 + count;
        if out.len() >= want || after.is_some_and(|a| a.resource > *resource) {
            continue;
        }
        let from = after.filter(|a| a.resource == *resource).map(|a| a.slot);
        let place = |slot: Slot, reach: Reach| Placed {
            at: ReviewCursor {
                resource: resource.clone(),
                slot,
            },
            reach,
        };
        for i in peers {
            if out.len() < want && from.is_none_or(|f| Slot::Peer(i) > f) {
                out.push(place(Slot::Peer(i), Reach::Peer(i)));
            }
        }
        let mut after_id = match from {
            Some(Slot::Device(id)) => Some(id),
            Some(Slot::Peer(_)) | None => None,
        };
        let only = ReviewSubject::Resource(resource.clone());
        while out.len() < want {
            let need = want - out.len();
            let rows = store
                .review_granted_devices(
                    to,
                    after_id,
                    i64::try_from(need).unwrap_or(i64::MAX),
                    count,
                )
                .await?;
            let full = rows.len() >= need;
            after_id = rows.last().map(|d| d.device.id).or(after_id);
            // The rule decides, on every row read: the read only narrowed the rows.
            for (d, _) in reachable(rows, cfg, &only) {
                out.push(place(Slot::Device(d.device.id), Reach::Device(Box::new(d))));
            }
            if !full {
                break;
            }
        }
    }
    Ok((out, total))
}

/// Who can reach what, pure: each active device of the subject whose user is a VPN user, with
/// the subject's resources its user's groups are granted (devices reaching none are left out).
pub fn reachable(
    devices: Vec<DeviceWithUser>,
    cfg: &ReviewPolicy<'_>,
    subject: &ReviewSubject,
) -> Vec<(DeviceWithUser, Vec<String>)> {
    let wanted = |resource: &str| match subject {
        ReviewSubject::Resource(r) => r == resource,
        ReviewSubject::User(_) => true,
        ReviewSubject::Site(s) => resource_site(cfg.policy, resource) == *s,
    };
    let mut out = Vec::new();
    for d in devices {
        if let ReviewSubject::User(u) = subject {
            if &d.user.username != u {
                continue;
            }
        }
        if !has_role(&d.user.groups, cfg.vpn_users) {
            continue;
        }
        let resources: Vec<String> = cfg
            .policy
            .resources_for_groups(d.user.groups.iter().map(String::as_str))
            .into_iter()
            .filter(|r| wanted(r))
            .collect();
        if !resources.is_empty() {
            out.push((d, resources));
        }
    }
    out
}

/// The entries of a page, in its order: each device's through which groups and grants, with
/// its last session and last flow there (two statements for the page's devices: the table the
/// append keeps, migration 0007, the events read from the chain) and its owner's factor.
async fn entries(
    store: &Store,
    cfg: &ReviewPolicy<'_>,
    subject: &ReviewSubject,
    placed: Vec<Placed>,
) -> Result<Vec<ReviewEntry>, StoreError> {
    let ids: Vec<i64> = placed
        .iter()
        .filter_map(|p| match &p.reach {
            Reach::Device(d) => Some(d.device.id),
            Reach::Peer(_) => None,
        })
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect();
    let owners: Vec<String> = placed
        .iter()
        .filter_map(|p| match &p.reach {
            Reach::Device(d) => Some(normalize_username(&d.user.username)),
            Reach::Peer(_) => None,
        })
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    let sessions = store.last_sessions(&ids).await?;
    let only = match subject {
        ReviewSubject::Resource(r) => Some(r.as_str()),
        ReviewSubject::User(_) | ReviewSubject::Site(_) => None,
    };
    let mut flows = store.last_flows(&ids, only).await?;
    let factors: HashMap<String, FactorSeen> = store
        .review_factors(&owners)
        .await?
        .into_iter()
        .map(|f| {
            let seen = FactorSeen {
                kind: f.kind,
                registered_at: f.registered_at.map(crate::time::format),
                last_used_at: f.last_used_at.map(crate::time::format),
            };
            (f.username, seen)
        })
        .collect();
    let mut out = Vec::with_capacity(placed.len());
    for Placed { at, reach } in placed {
        let resource = at.resource;
        let site = resource_site(cfg.policy, &resource);
        let mfa = cfg.policy.needs_mfa(&resource);
        out.push(match reach {
            Reach::Peer(i) => static_peer_entry(&cfg.static_peers[i], resource, site, mfa),
            Reach::Device(d) => ReviewEntry {
                via: via(cfg.policy, &d.user.groups, &resource),
                last_session: sessions
                    .get(&d.device.id)
                    .cloned()
                    .map(SessionSeen::from_event),
                last_flow: flows
                    .remove(&(d.device.id, resource.clone()))
                    .map(FlowSeen::from_event),
                factor: factors.get(&normalize_username(&d.user.username)).cloned(),
                site,
                mfa,
                resource,
                username: Some(d.user.username.clone()),
                display_name: Some(d.user.display_name.clone()),
                device_id: Some(d.device.id),
                device_name: d.device.name.clone(),
                hostname: Some(d.device.hostname.clone()),
                tunnel_address: d.device.tunnel_address.to_string(),
            },
        });
    }
    Ok(out)
}

/// Each of `groups` that grants `resource`, with the `[[grant]]` sections that do.
fn via(policy: &Policy, groups: &[String], resource: &str) -> Vec<Via> {
    groups
        .iter()
        .filter_map(|g| {
            let grants = policy.grant_sections(g, resource);
            (!grants.is_empty()).then(|| Via {
                group: Some(g.clone()),
                grants,
                peer: None,
            })
        })
        .collect()
}

/// A static `[[peer]]`'s entry for `resource` (of `site`).
fn static_peer_entry(p: &StaticPeer, resource: String, site: String, mfa: bool) -> ReviewEntry {
    ReviewEntry {
        resource,
        site,
        username: None,
        display_name: None,
        device_id: None,
        device_name: p.name.clone(),
        hostname: None,
        tunnel_address: p.address.to_string(),
        via: vec![Via {
            group: None,
            grants: Vec::new(),
            peer: Some(p.name.clone()),
        }],
        last_session: None,
        last_flow: None,
        mfa,
        factor: None,
    }
}

/// A whole review read page after page (`sesame audit access-review` writes each as it comes).
pub struct ReviewPages {
    store: Store,
    config: Arc<Config>,
    subject: ReviewSubject,
    after: Option<ReviewCursor>,
    counts: ReviewCounts,
    done: bool,
}

impl ReviewPages {
    /// From the first entry (or after `after`).
    pub fn new(
        store: Store,
        config: Arc<Config>,
        subject: ReviewSubject,
        after: Option<ReviewCursor>,
    ) -> Self {
        ReviewPages {
            store,
            config,
            subject,
            after,
            counts: ReviewCounts::default(),
            done: false,
        }
    }

    /// The next page of at most `limit` entries; `None` once the last was given.
    pub async fn next_page(&mut self, limit: usize) -> Option<Result<Review, ReviewError>> {
        if self.done {
            return None;
        }
        let ask = PageAsk {
            after: self.after.take(),
            limit: Some(limit),
        };
        let cfg = ReviewPolicy::of(&self.config);
        let counts = Some(&self.counts);
        match answer(&self.store, &cfg, &self.subject, &ask, counts).await {
            Ok((review, next)) => {
                self.done = next.is_none();
                self.after = next;
                Some(Ok(review))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
#[path = "review_tests.rs"]
mod tests;
