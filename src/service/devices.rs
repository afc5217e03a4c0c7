//! Devices: listing with search and filters and revocation within the actor's rights; a
//! device's own bearer token, its current configuration and key rotation.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::api::DeviceConfig;
use crate::audit::{Action, AuditContext};
use crate::store::{Device, DeviceSearch, DeviceStatus, Rotation, Store, StoreError};

use super::context::Record;
use super::enrol::{device_config, parse_public_key};
use super::roles::{Actor, Role, Scope};
use super::{ServiceError, Services};

/// Least time between two key rotations of one device: a copied token cannot churn keys.
pub const ROTATION_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// What to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Only this user's devices.
    pub user: Option<String>,
    pub status: Option<DeviceStatus>,
    /// Substring of the user, name, hostname or tunnel address (case and accents ignored).
    pub query: Option<String>,
}

/// Whether `actor` may see and manage devices of `username`: IT staff within their scope, or
/// the owner.
async fn may_manage(
    store: &Store,
    actor: &Actor,
    username: &str,
    cache: &mut HashMap<String, bool>,
) -> Result<bool, StoreError> {
    if actor.username == username && actor.has(Role::VpnUser) {
        return Ok(true);
    }
    if !actor.has(Role::ItStaff) {
        return Ok(false);
    }
    if !actor.is_delegated() {
        return Ok(true);
    }
    if let Some(v) = cache.get(username) {
        return Ok(*v);
    }
    let groups = store
        .user(username)
        .await?
        .map(|u| u.groups)
        .unwrap_or_default();
    let v = actor.manages(&groups);
    cache.insert(username.to_string(), v);
    Ok(v)
}

/// Devices shown per page of the web list.
pub const PAGE_SIZE: i64 = 50;

/// One page of a device list and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePage {
    pub devices: Vec<Device>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<i64>,
}

/// The devices `actor` may see (IT staff: their scope, plus their own; a VPN user: their own),
/// filtered, by id: the owner, status, search and scope are applied by the store's query.
/// `after`/`limit` page it (`limit` `None`: everything).
pub async fn list_page(
    svc: &Services,
    actor: &Actor,
    filter: &DeviceFilter,
    after: Option<i64>,
    limit: Option<i64>,
) -> Result<DevicePage, ServiceError> {
    let mut search = DeviceSearch {
        owner: filter.user.clone(),
        status: filter.status,
        text: filter.query.clone(),
        after_id: after,
        limit,
        ..DeviceSearch::default()
    };
    if actor.has(Role::ItStaff) {
        if let Scope::Groups(groups) = &actor.scope {
            search.scope = Some(groups.iter().cloned().collect());
            search.scope_also = actor.has(Role::VpnUser).then(|| actor.username.clone());
        }
    } else if actor.has(Role::VpnUser) {
        search.owner = Some(actor.username.clone());
    } else {
        return Err(ServiceError::Forbidden);
    }
    let (devices, next_after) = svc.store().search_devices(&search).await?;
    Ok(DevicePage {
        devices,
        next_after,
    })
}

/// Every device `actor` may see, filtered (see [`list_page`]).
pub async fn list(
    svc: &Services,
    actor: &Actor,
    filter: &DeviceFilter,
) -> Result<Vec<Device>, ServiceError> {
    Ok(list_page(svc, actor, filter, None, None).await?.devices)
}

/// One device `actor` may see; `NotFound` otherwise (as if it did not exist).
pub async fn get(svc: &Services, actor: &Actor, id: i64) -> Result<Device, ServiceError> {
    let store = svc.store();
    if !actor.has(Role::ItStaff) && !actor.has(Role::VpnUser) {
        return Err(ServiceError::Forbidden);
    }
    let device = store.device(id).await?.ok_or(ServiceError::NotFound)?;
    if !may_manage(store, actor, &device.username, &mut HashMap::new()).await? {
        return Err(ServiceError::NotFound);
    }
    Ok(device)
}

/// Revokes a device at once (the gateway cuts its session). Revoking a revoked device answers
/// it as it is (`false`). `reason` is free text (empty: "revoked by ACTOR"). Without a
/// publisher (the CLI, another process), the running control plane sees the change within its
/// devices-table poll. Counted in the revocation metrics when revoked now.
pub async fn revoke(
    svc: &Services,
    actor: &Actor,
    id: i64,
    reason: &str,
    source_ip: Option<IpAddr>,
) -> Result<(Device, bool), ServiceError> {
    let device = get(svc, actor, id).await?;
    if device.status == DeviceStatus::Revoked {
        return Ok((device, false));
    }
    let reason = match reason.trim() {
        "" => format!("revoked by {}", actor.username),
        r => r.chars().filter(|c| !c.is_control()).take(500).collect(),
    };
    let ctx = AuditContext::new(actor.username.clone(), source_ip.map(|ip| ip.to_string()));
    let store = svc.store();
    let device = match store.revoke_device(id, &reason, &ctx).await {
        Ok(d) => d,
        // Revoked meanwhile (sync, another technician): same answer as above.
        Err(StoreError::DeviceRevoked(_)) => {
            return Ok((
                store.device(id).await?.ok_or(ServiceError::NotFound)?,
                false,
            ))
        }
        Err(e) => return Err(e.into()),
    };
    svc.metrics().revocation();
    super::mfa::device_revoked(svc, &actor.username, id, source_ip).await;
    if let Some(p) = svc.publisher() {
        // The revoked device leaves the gateway and the site feeds at once (the change log
        // names it).
        p.publish_now().await;
    }
    Ok((device, true))
}

/// When each of `ids` last opened a tunnel session (`tunnel.session_started`), from the audit
/// log; absent: never seen.
pub async fn last_connections(
    svc: &Services,
    ids: &[i64],
) -> Result<HashMap<i64, i64>, ServiceError> {
    Ok(svc.store().last_session_starts(ids).await?)
}

/// The active device holding this bearer token; a revoked one answers `device_revoked`, a
/// suspended one `device_suspended`, one whose key expired `device_expired`.
pub async fn by_token(svc: &Services, token: &str) -> Result<Device, ServiceError> {
    let device = svc
        .store()
        .device_by_token(token)
        .await?
        .ok_or(ServiceError::Unauthenticated)?;
    usable(svc, device)
}

/// `device` if it may act now (active, key not expired), else why not: `device_revoked`,
/// `device_suspended` or `device_expired`. One rule for the bearer token and `/mon-acces`.
pub(super) fn usable(svc: &Services, device: Device) -> Result<Device, ServiceError> {
    match device.status {
        // The token dies with the key (the expiry sweep revokes it within a minute).
        DeviceStatus::Active if device.expires_at.is_some_and(|e| e <= svc.now_ms()) => {
            Err(ServiceError::DeviceExpired)
        }
        DeviceStatus::Active => Ok(device),
        DeviceStatus::Suspended => Err(ServiceError::DeviceSuspended),
        DeviceStatus::Revoked => Err(ServiceError::DeviceRevoked),
    }
}

/// The stored groups of `username` (as of the last login or sync).
async fn user_groups(svc: &Services, username: &str) -> Result<Vec<String>, ServiceError> {
    Ok(svc
        .store()
        .user(username)
        .await?
        .map(|u| u.groups)
        .unwrap_or_default())
}

/// The configuration of the device holding `token`, with the grants of the configuration in
/// force now (a reload that grants a resource shows here at once).
pub async fn current_config(svc: &Services, token: &str) -> Result<DeviceConfig, ServiceError> {
    let device = by_token(svc, token).await?;
    let groups = user_groups(svc, &device.username).await?;
    let mut cfg = device_config(&svc.config(), &svc.gateway_public_key()?, &device, &groups);
    cfg.mfa_until = super::mfa::window_until(svc, device.id)
        .await?
        .map(crate::time::format);
    Ok(cfg)
}

/// Replaces the key of the device holding `token` (and the token: the old one dies), within
/// `[devices]` lifetimes and [`ROTATION_MIN_INTERVAL`]; the gateway swaps the peer at once. The
/// store writes `device.rotated` with the change; a refused rotation by a valid token is audited
/// here (`device.rotated`, with the code as `reason`): a copied token trying its luck shows up.
pub async fn rotate(
    svc: &Services,
    token: &str,
    public_key: &str,
    source_ip: IpAddr,
) -> Result<DeviceConfig, ServiceError> {
    let device = by_token(svc, token).await?;
    let config = svc.config();
    let gateway_key = svc.gateway_public_key()?;
    let rules = Rotation {
        key_lifetime: Some(config.devices.key_lifetime),
        max_lifetime: Some(config.devices.max_lifetime),
        min_interval: ROTATION_MIN_INTERVAL,
    };
    let ctx = AuditContext::new(device.username.clone(), Some(source_ip.to_string()));
    let checked = match super::mfa::reauth_check(svc, &device).await {
        Ok(()) => parse_public_key(public_key, &gateway_key),
        Err(e) => Err(e),
    };
    let rotated = match checked {
        Ok(key) => svc
            .store()
            .rotate_key(device.id, &key, &rules, &ctx)
            .await
            .map_err(ServiceError::from),
        Err(e) => Err(e),
    };
    let (rotated, new_token) = match rotated {
        Ok(r) => r,
        Err(e) => {
            svc.audit(Record {
                actor: &device.username,
                action: Action::DeviceRotated,
                target: &format!("device:{}", device.id),
                outcome: e.outcome(),
                source_ip: Some(source_ip),
                details: serde_json::json!({
                    "username": device.username,
                    "old_public_key": device.public_key_base64(),
                    "reason": e.code(),
                }),
            })
            .await;
            return Err(e);
        }
    };
    svc.metrics().rotation();
    // The rotation committed: the gateway gets it (the change log names the device, and the
    // old key is found as the device's published one) even if this answer fails below.
    if let Some(p) = svc.publisher() {
        p.publish_now().await;
    }
    let groups = user_groups(svc, &rotated.username).await?;
    let mut cfg = device_config(&config, &gateway_key, &rotated, &groups);
    cfg.device_token = Some(new_token);
    cfg.mfa_until = super::mfa::window_until(svc, rotated.id)
        .await?
        .map(crate::time::format);
    Ok(cfg)
}
