//! Enrolment: redeem a code, allocate a tunnel address, create the device — all or nothing.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use sqlx::AnyConnection;

use super::audit;
use super::codes::{self, CodeState};
use super::devices::{self, Device, DeviceStatus};
use super::users::{self, normalize_username};
use super::{hash_secret, random_token, Backend, Store, StoreError};
use crate::audit::{Action, AuditContext, NewAuditEvent};
use crate::directory::DirectoryUser;
use crate::hostname::Hostname;
use crate::key::PublicKey;
use crate::time::duration_ms;

/// Where device addresses come from: the hosts of `network`, minus `reserved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    pub network: Ipv4Net,
    /// The gateway's own address, static peers' addresses: never handed to a device.
    pub reserved: Vec<Ipv4Addr>,
}

impl AddressPool {
    /// The pool of a configuration: `tunnel_network` minus the gateway and the static peers.
    pub fn from_config(config: &crate::config::Config) -> AddressPool {
        let mut reserved = vec![config.gateway.address];
        reserved.extend(config.peers.iter().map(|p| p.address));
        AddressPool {
            network: config.gateway.tunnel_network,
            reserved,
        }
    }

    /// The lowest host address neither reserved nor in `used`.
    pub fn first_free(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.first_free_after(used, None)
    }

    /// The lowest host address above `after` (all of them: `None`) neither reserved nor in
    /// `used`. Network and broadcast addresses are never handed out (none at all in a /31 or
    /// /32).
    fn first_free_after(
        &self,
        used: &HashSet<Ipv4Addr>,
        after: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let first = u32::from(self.network.network()).checked_add(1)?;
        let last = u32::from(self.network.broadcast()).checked_sub(1)?;
        let start = match after {
            Some(a) => u32::from(a).checked_add(1)?.max(first),
            None => first,
        };
        (start..=last)
            .map(Ipv4Addr::from)
            .find(|a| !self.reserved.contains(a) && !used.contains(a))
    }
}

/// Tunnel addresses for the enrolments of ONE writer transaction: the used addresses are read
/// once per transaction (a group-committed batch), not once per enrolment (that read is
/// O(devices) and ran inside the serialised writer), and each address handed out is added, so
/// the next one is searched from there. An enrolment rolled back after its allocation leaves a
/// gap that the next transaction, reading the table again, fills.
#[derive(Debug, Default)]
pub(crate) struct Allocator {
    /// The pool the set was read for, the addresses used, the last one handed out.
    state: Option<(AddressPool, HashSet<Ipv4Addr>, Option<Ipv4Addr>)>,
}

impl Allocator {
    /// The lowest free address of `pool` in this transaction, marked used.
    async fn next(
        &mut self,
        tx: &mut AnyConnection,
        backend: Backend,
        pool: &AddressPool,
    ) -> Result<Ipv4Addr, StoreError> {
        let stale = self.state.as_ref().is_none_or(|(p, ..)| p != pool);
        if stale {
            let used = used_addresses(tx, backend).await?;
            self.state = Some((pool.clone(), used, None));
        }
        let Some((_, used, last)) = self.state.as_mut() else {
            return Err(StoreError::InvalidInput(
                "address allocator not loaded".into(),
            ));
        };
        let address =
            pool.first_free_after(used, *last)
                .ok_or(StoreError::AddressPoolExhausted {
                    network: pool.network,
                })?;
        used.insert(address);
        *last = Some(address);
        Ok(address)
    }
}

/// What an agent sends to enrol, after the portal has authenticated the user.
#[derive(Debug, Clone)]
pub struct EnrolRequest<'a> {
    /// The code as typed (any case, spaces, dashes).
    pub code: &'a str,
    /// The authenticated user, as the directory describes them (stored/refreshed).
    pub user: &'a DirectoryUser,
    pub public_key: PublicKey,
    pub hostname: &'a Hostname,
    /// Key lifetime; `None`: the key does not expire.
    pub key_lifetime: Option<Duration>,
}

/// A new device and its bearer token: the only time the token exists in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub device: Device,
    pub token: String,
}

/// Every address held by a device row, revoked included (addresses are never reused).
///
/// Read as ONE aggregated row: this runs inside the serialised writer transaction of every
/// enrolment, and row-by-row it cost one driver round trip per device (sqlx's SQLite worker
/// hands rows over one message each), which grew with the number of devices.
async fn used_addresses(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<HashSet<Ipv4Addr>, StoreError> {
    let sql = match backend {
        Backend::Sqlite => "SELECT COALESCE(group_concat(tunnel_address, ','), '') FROM devices",
        Backend::Postgres => "SELECT COALESCE(string_agg(tunnel_address, ','), '') FROM devices",
    };
    let all: String = sqlx::query_scalar(sql).fetch_one(&mut *conn).await?;
    all.split(',')
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().map_err(|_| StoreError::Corrupt {
                table: "devices",
                message: format!("tunnel_address {a:?}"),
            })
        })
        .collect()
}

/// One enrolment as the group committer runs it: validated, owned, ready for the transaction.
#[derive(Debug, Clone)]
pub(crate) struct EnrolWrite {
    code: codes::CodeLookup,
    username: String,
    user: DirectoryUser,
    public_key: PublicKey,
    hostname: String,
    key_lifetime: Option<Duration>,
    pool: AddressPool,
    ctx: AuditContext,
}

impl Store {
    /// Redeems an enrolment code for a new device, all or nothing: checks the code (unknown /
    /// issued for another user / already used / expired: distinct errors), checks the key is
    /// unused, allocates the lowest free address of `pool`, stores the user and the device, marks
    /// the code redeemed and appends `enrol.completed`. Any error leaves nothing written.
    /// Concurrent enrolments are group-committed (one writer transaction, one fsync; checks
    /// before writes, so one refused enrolment does not fail its neighbours); this returns once
    /// the device is durable. Refusals are NOT audited here: the caller appends `enrol.rejected`.
    pub async fn enrol(
        &self,
        req: &EnrolRequest<'_>,
        pool: &AddressPool,
        ctx: &AuditContext,
    ) -> Result<Enrolled, StoreError> {
        let code =
            codes::CodeLookup::new(self.code_key(), req.code).ok_or(StoreError::CodeNotFound)?;
        let write = EnrolWrite {
            code,
            username: normalize_username(&req.user.username),
            user: req.user.clone(),
            public_key: req.public_key,
            hostname: req.hostname.to_string(),
            key_lifetime: req.key_lifetime,
            pool: pool.clone(),
            ctx: ctx.clone(),
        };
        self.commit_enrolment(write).await
    }
}

/// An enrolment after its checks, inside the writer transaction.
#[derive(Debug)]
pub(crate) enum Checked {
    /// Refused (code unknown, for another user, used or expired; key in use; no address left):
    /// nothing was written, the transaction goes on with the other enrolments.
    Refused(StoreError),
    /// Accepted: `enrol_write` creates it.
    Ready {
        device_name: String,
        address: Ipv4Addr,
    },
}

/// The enrolment's checks inside the caller's writer transaction: reads only, so a refusal
/// needs no rollback (no savepoint either). `Err`: the transaction itself failed.
pub(crate) async fn enrol_check(
    tx: &mut AnyConnection,
    backend: Backend,
    now: i64,
    w: &EnrolWrite,
    addresses: &mut Allocator,
) -> Result<Checked, StoreError> {
    let Some(code) = codes::fetch(&mut *tx, &w.code, now).await? else {
        return Ok(Checked::Refused(StoreError::CodeNotFound));
    };
    if code.username != w.username {
        return Ok(Checked::Refused(StoreError::CodeWrongUser));
    }
    match code.state {
        CodeState::Pending => {}
        CodeState::Redeemed { .. } => return Ok(Checked::Refused(StoreError::CodeAlreadyUsed)),
        CodeState::Expired => return Ok(Checked::Refused(StoreError::CodeExpired)),
    }
    if devices::key_in_use(&mut *tx, &w.public_key).await? {
        return Ok(Checked::Refused(StoreError::PublicKeyInUse));
    }
    match addresses.next(&mut *tx, backend, &w.pool).await {
        Ok(address) => Ok(Checked::Ready {
            device_name: code.device_name,
            address,
        }),
        Err(e @ StoreError::AddressPoolExhausted { .. }) => Ok(Checked::Refused(e)),
        Err(e) => Err(e),
    }
}

/// The writes of a checked enrolment: user, device, code redemption, `enrol.completed`. Any
/// error leaves the transaction unusable: the caller rolls all of it back (the group committer
/// then retries each of its items alone, so this one gets its own answer).
pub(crate) async fn enrol_write(
    tx: &mut AnyConnection,
    now: i64,
    w: &EnrolWrite,
    device_name: String,
    address: Ipv4Addr,
) -> Result<Enrolled, StoreError> {
    users::upsert(&mut *tx, &w.user, now).await?;
    let token = random_token();
    let expires_at = w.key_lifetime.map(|l| now.saturating_add(duration_ms(l)));
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO devices (username, name, hostname, public_key, tunnel_address, status, \
         token_hash, created_at, expires_at, search_text) \
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9) RETURNING id",
    )
    .bind(&w.username)
    .bind(&device_name)
    .bind(&w.hostname)
    .bind(w.public_key.to_base64())
    .bind(address.to_string())
    .bind(hash_secret(&token))
    .bind(now)
    .bind(expires_at)
    .bind(super::device_search::search_text(
        &w.username,
        &device_name,
        &w.hostname,
    ))
    .fetch_one(&mut *tx)
    .await?;
    let sql = format!(
        "UPDATE enrolment_codes SET redeemed_at = $1, device_id = $2 \
         WHERE {} AND redeemed_at IS NULL",
        codes::CodeLookup::condition(3)
    );
    let redeemed = w
        .code
        .bind(sqlx::query(&sql).bind(now).bind(id))
        .execute(&mut *tx)
        .await?;
    if redeemed.rows_affected() != 1 {
        return Err(StoreError::CodeAlreadyUsed);
    }
    // The row just inserted, as written (not read back: one round trip less in the writer).
    let device = Device {
        id,
        username: w.username.clone(),
        name: device_name,
        hostname: w.hostname.clone(),
        public_key: w.public_key,
        tunnel_address: address,
        status: DeviceStatus::Active,
        created_at: now,
        rotated_at: None,
        revoked_at: None,
        revoke_reason: None,
        expires_at,
        suspended_at: None,
        suspend_reason: None,
    };
    audit::append(
        &mut *tx,
        now,
        &NewAuditEvent::new(Action::EnrolCompleted, &w.ctx, format!("device:{id}")).details(
            serde_json::json!({
                "username": w.username,
                "device_name": device.name,
                "hostname": device.hostname,
                "public_key": device.public_key_base64(),
                "tunnel_address": device.tunnel_address.to_string(),
            }),
        ),
    )
    .await?;
    Ok(Enrolled { device, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(net: &str, reserved: &[&str]) -> AddressPool {
        AddressPool {
            network: net.parse().expect("net"),
            reserved: reserved.iter().map(|a| a.parse().expect("addr")).collect(),
        }
    }

    #[test]
    fn first_free_after_continues_above_and_tiny_networks_have_none() {
        let p = pool("100.64.0.0/29", &["100.64.0.1"]);
        let used: HashSet<Ipv4Addr> = ["100.64.0.4".parse().expect("addr")].into();
        let after = |a: &str| p.first_free_after(&used, Some(a.parse().expect("addr")));
        assert_eq!(after("100.64.0.2"), Some(Ipv4Addr::new(100, 64, 0, 3)));
        assert_eq!(after("100.64.0.3"), Some(Ipv4Addr::new(100, 64, 0, 5)));
        assert_eq!(
            after("100.64.0.6"),
            None,
            "the broadcast is never handed out"
        );
        assert_eq!(after("10.0.0.1"), Some(Ipv4Addr::new(100, 64, 0, 2)));
        for net in ["100.64.0.8/31", "100.64.0.9/32"] {
            assert_eq!(pool(net, &[]).first_free(&HashSet::new()), None, "{net}");
        }
    }

    #[test]
    fn first_free_skips_network_broadcast_reserved_and_used() {
        let p = pool("100.64.0.0/29", &["100.64.0.1", "100.64.0.3"]);
        let mut used = HashSet::new();
        let mut order = Vec::new();
        while let Some(a) = p.first_free(&used) {
            order.push(a.to_string());
            used.insert(a);
        }
        assert_eq!(
            order,
            ["100.64.0.2", "100.64.0.4", "100.64.0.5", "100.64.0.6"]
        );
    }
}
