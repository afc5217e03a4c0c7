//! Each site's desired set for its gateway's feed: a device belongs to site S's set iff its
//! user is a current VPN user granted at least one resource on S, with those resources only,
//! and its access window's end when one of them needs the second factor.

use std::collections::{BTreeMap, HashMap};

use crate::api::feed::{FeedPeer, FeedResource};
use crate::config::Config;
use crate::service::feed::SiteSet;

use super::desired::{has_role, resources_for, ActiveDevice};

/// Every `[[site]]`'s set (sites with nothing granted get an empty one).
pub fn site_sets(config: &Config, devices: &[ActiveDevice]) -> BTreeMap<String, SiteSet> {
    let mut sets: BTreeMap<String, SiteSet> = config
        .sites
        .iter()
        .map(|s| (s.name.clone(), SiteSet::default()))
        .collect();
    for r in config.policy.resources() {
        if let Some(set) = sets.get_mut(&r.site) {
            set.resources.push(FeedResource {
                name: r.name.clone(),
                description: r.description.clone(),
                allow: r.rules.iter().map(ToString::to_string).collect(),
                mfa: config.policy.needs_mfa(&r.name),
            });
        }
    }
    // Worked out once per list of groups (most users share one), not per device.
    let mut by_groups: HashMap<&[String], Vec<SiteGrant<'_>>> = HashMap::new();
    for d in devices {
        let grants = by_groups
            .entry(d.groups.as_slice())
            .or_insert_with(|| site_grants(config, &d.groups));
        for (site, resources, protected) in grants.iter() {
            let Some(set) = sets.get_mut(*site) else {
                continue;
            };
            set.peers.push(FeedPeer {
                public_key: d.public_key.to_base64(),
                address: d.address,
                device_id: d.id,
                device_name: d.name.clone(),
                username: d.username.clone(),
                resources: resources.clone(),
                key_expires_at_ms: d.key_expires_at.unwrap_or(i64::MAX),
                // The window travels only to a site where it opens something.
                mfa_until_ms: d.mfa_until_ms.filter(|_| *protected),
                persistent_keepalive: None,
            });
        }
    }
    sets
}

/// A site, the resources granted there, and whether one of them needs the second factor.
type SiteGrant<'c> = (&'c str, Vec<String>, bool);

/// What a member of `groups` is granted on each site; nothing for a user who is not a VPN user.
fn site_grants<'c>(config: &'c Config, groups: &[String]) -> Vec<SiteGrant<'c>> {
    if !has_role(groups, &config.roles.vpn_users) {
        return Vec::new();
    }
    let mut by_site: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for name in resources_for(&config.policy, groups) {
        if let Some(r) = config.policy.resource(&name) {
            by_site.entry(r.site.as_str()).or_default().push(name);
        }
    }
    by_site
        .into_iter()
        .map(|(site, resources)| {
            let protected = resources.iter().any(|n| config.policy.needs_mfa(n));
            (site, resources, protected)
        })
        .collect()
}
