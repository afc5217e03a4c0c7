//! Devices: listing with search and filters, and revocation, within the actor's rights.

use std::collections::HashMap;

use crate::audit::AuditContext;
use crate::store::{Device, DeviceSearch, DeviceStatus, Store, StoreError};

use super::roles::{Actor, Role, Scope};
use super::{Publisher, ServiceError};

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
    store: &Store,
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
    let (devices, next_after) = store.search_devices(&search).await?;
    Ok(DevicePage {
        devices,
        next_after,
    })
}

/// Every device `actor` may see, filtered (see [`list_page`]).
pub async fn list(
    store: &Store,
    actor: &Actor,
    filter: &DeviceFilter,
) -> Result<Vec<Device>, ServiceError> {
    Ok(list_page(store, actor, filter, None, None).await?.devices)
}

/// One device `actor` may see; `NotFound` otherwise (as if it did not exist).
pub async fn get(store: &Store, actor: &Actor, id: i64) -> Result<Device, ServiceError> {
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
/// devices-table poll.
pub async fn revoke(
    store: &Store,
    publisher: Option<&dyn Publisher>,
    actor: &Actor,
    id: i64,
    reason: &str,
    ctx: &AuditContext,
) -> Result<(Device, bool), ServiceError> {
    let device = get(store, actor, id).await?;
    if device.status == DeviceStatus::Revoked {
        return Ok((device, false));
    }
    let reason = match reason.trim() {
        "" => format!("revoked by {}", actor.username),
        r => r.chars().filter(|c| !c.is_control()).take(500).collect(),
    };
    let device = match store.revoke_device(id, &reason, ctx).await {
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
    if let Some(p) = publisher {
        p.publish_now().await;
    }
    Ok((device, true))
}

/// When each of `ids` last opened a tunnel session (`tunnel.session_started`), from the audit
/// log; absent: never seen.
pub async fn last_connections(
    store: &Store,
    ids: &[i64],
) -> Result<HashMap<i64, i64>, ServiceError> {
    Ok(store.last_session_starts(ids).await?)
}
