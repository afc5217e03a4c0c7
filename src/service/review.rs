//! The access review: who can reach a resource now (or what a user's devices can reach), read from the policy and the store.
//!
//! The one implementation behind `GET /api/v1/audit/access-review`, `sesame audit
//! access-review` and the page; its answer types are the audit's (`crate::audit::review`).

use crate::audit::review::{
    FactorSeen, FlowSeen, Review, ReviewEntry, ReviewSubject, SessionSeen, Via,
};
use crate::audit::QueryError;
use crate::config::{StaticPeer, LOCAL_SITE};
use crate::policy::Policy;
use crate::store::{normalize_username, DeviceWithUser, Store, StoreError};

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

/// Why a review failed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs the review: the same rule as the gateway's desired peer set (an active device of a
/// `vpn_users` member reaches the union of its user's groups' grants; a static peer its listed
/// resources), read from the store's devices and the groups seen at the last sync or login.
pub async fn access_review(
    store: &Store,
    cfg: &ReviewPolicy<'_>,
    subject: &ReviewSubject,
) -> Result<Review, ReviewError> {
    if let ReviewSubject::Resource(r) = subject {
        if cfg.policy.resource(r).is_none() {
            return Err(QueryError::UnknownResource(r.clone()).into());
        }
    }
    let reachable = reachable(store.active_devices().await?, cfg, subject);
    let mut entries = device_entries(store, cfg, subject, reachable).await?;
    // Static peers belong to no user: listed in a resource (or site) review only.
    let peer_resources: Vec<&str> = match subject {
        ReviewSubject::Resource(r) => vec![r.as_str()],
        ReviewSubject::Site(s) => cfg
            .policy
            .resources()
            .filter(|r| resource_site(cfg.policy, &r.name) == *s)
            .map(|r| r.name.as_str())
            .collect(),
        ReviewSubject::User(_) => Vec::new(),
    };
    for r in peer_resources {
        entries.extend(static_peer_entries(
            cfg.static_peers,
            r,
            &resource_site(cfg.policy, r),
            cfg.policy.needs_mfa(r),
        ));
    }
    entries.sort_by(|a, b| (&a.resource, a.device_id).cmp(&(&b.resource, b.device_id)));
    let (resource, user, site) = match subject {
        ReviewSubject::Resource(r) => (Some(r.clone()), None, None),
        ReviewSubject::User(u) => (None, Some(u.clone()), None),
        ReviewSubject::Site(s) => (None, None, Some(s.clone())),
    };
    Ok(Review {
        resource,
        user,
        site,
        entries,
    })
}

/// Who can reach what, pure: each active device of the subject whose user is a VPN user, with
/// the subject's resources its user's groups are granted (devices reaching none are left out).
fn reachable(
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

/// One entry per reachable (device, resource), through which groups and grants, with the
/// device's last session and last flow there: two statements for all the devices (the table
/// the append keeps, migration 0007), the events read from the chain.
async fn device_entries(
    store: &Store,
    cfg: &ReviewPolicy<'_>,
    subject: &ReviewSubject,
    reachable: Vec<(DeviceWithUser, Vec<String>)>,
) -> Result<Vec<ReviewEntry>, StoreError> {
    let ids: Vec<i64> = reachable.iter().map(|(d, _)| d.device.id).collect();
    let mut sessions = store.last_sessions(&ids).await?;
    let only = match subject {
        ReviewSubject::Resource(r) => Some(r.as_str()),
        ReviewSubject::User(_) | ReviewSubject::Site(_) => None,
    };
    let mut flows = store.last_flows(&ids, only).await?;
    let factors: std::collections::HashMap<String, FactorSeen> = store
        .mfa_factors()
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
    let mut entries = Vec::new();
    for (d, resources) in reachable {
        let last_session = sessions.remove(&d.device.id).map(SessionSeen::from_event);
        for resource in resources {
            let last_flow = flows
                .remove(&(d.device.id, resource.clone()))
                .map(FlowSeen::from_event);
            let via = d
                .user
                .groups
                .iter()
                .filter_map(|g| {
                    let grants = cfg.policy.grant_sections(g, &resource);
                    (!grants.is_empty()).then(|| Via {
                        group: Some(g.clone()),
                        grants,
                        peer: None,
                    })
                })
                .collect();
            entries.push(ReviewEntry {
                site: resource_site(cfg.policy, &resource),
                mfa: cfg.policy.needs_mfa(&resource),
                factor: factors.get(&normalize_username(&d.user.username)).cloned(),
                resource,
                username: Some(d.user.username.clone()),
                display_name: Some(d.user.display_name.clone()),
                device_id: Some(d.device.id),
                device_name: d.device.name.clone(),
                hostname: Some(d.device.hostname.clone()),
                tunnel_address: d.device.tunnel_address.to_string(),
                via,
                last_session: last_session.clone(),
                last_flow,
            });
        }
    }
    Ok(entries)
}

/// The static `[[peer]]`s given `resource` (of `site`).
fn static_peer_entries<'a>(
    peers: &'a [StaticPeer],
    resource: &'a str,
    site: &'a str,
    mfa: bool,
) -> impl Iterator<Item = ReviewEntry> + 'a {
    peers
        .iter()
        .filter(move |p| p.resources.iter().any(|r| r == resource))
        .map(move |p| ReviewEntry {
            resource: resource.to_string(),
            site: site.to_string(),
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
        })
}

#[cfg(test)]
#[path = "review_tests.rs"]
mod tests;
