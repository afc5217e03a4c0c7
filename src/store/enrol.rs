//! Enrolment: redeem a code, allocate a tunnel address, create the device — all or nothing.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use sqlx::AnyConnection;

use super::audit;
use super::codes::{self, CodeState};
use super::devices::{self, Device};
use super::users::{self, normalize_username};
use super::{duration_ms, encode_key, hash_secret, random_token, Backend, Store, StoreError};
use crate::audit::{Action, AuditContext, NewAuditEvent};
use crate::directory::DirectoryUser;

/// Longest host name accepted from an agent (DNS limit).
const MAX_HOSTNAME_LEN: usize = 253;

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
        self.network
            .hosts()
            .filter(|a| *a != self.network.network() && *a != self.network.broadcast())
            .find(|a| !self.reserved.contains(a) && !used.contains(a))
    }
}

/// What an agent sends to enrol, after the portal has authenticated the user.
#[derive(Debug, Clone)]
pub struct EnrolRequest<'a> {
    /// The code as typed (any case, spaces, dashes).
    pub code: &'a str,
    /// The authenticated user, as the directory describes them (stored/refreshed).
    pub user: &'a DirectoryUser,
    pub public_key: [u8; 32],
    pub hostname: &'a str,
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
    code_hash: String,
    username: String,
    user: DirectoryUser,
    public_key: [u8; 32],
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
    /// Concurrent enrolments are group-committed (one writer transaction, one fsync, a savepoint
    /// each: one refused enrolment does not fail its neighbours); this returns once the device
    /// is durable. Refusals are NOT audited here: the caller appends `enrol.rejected`.
    pub async fn enrol(
        &self,
        req: &EnrolRequest<'_>,
        pool: &AddressPool,
        ctx: &AuditContext,
    ) -> Result<Enrolled, StoreError> {
        let hostname = req.hostname.trim();
        if hostname.is_empty()
            || hostname.len() > MAX_HOSTNAME_LEN
            || hostname.chars().any(char::is_control)
        {
            return Err(StoreError::InvalidInput(
                "hostname must be 1 to 253 printable characters".into(),
            ));
        }
        let code_hash = codes::code_hash(req.code).ok_or(StoreError::CodeNotFound)?;
        let write = EnrolWrite {
            code_hash,
            username: normalize_username(&req.user.username),
            user: req.user.clone(),
            public_key: req.public_key,
            hostname: hostname.to_string(),
            key_lifetime: req.key_lifetime,
            pool: pool.clone(),
            ctx: ctx.clone(),
        };
        self.commit_enrolment(write).await
    }
}

/// The enrolment's reads and writes inside the caller's writer transaction (the group
/// committer wraps each one in a savepoint). An error means the caller must roll it back.
pub(crate) async fn enrol_in(
    tx: &mut AnyConnection,
    backend: Backend,
    now: i64,
    w: &EnrolWrite,
) -> Result<Enrolled, StoreError> {
    let code = codes::fetch(&mut *tx, &w.code_hash, now)
        .await?
        .ok_or(StoreError::CodeNotFound)?;
    if code.username != w.username {
        return Err(StoreError::CodeWrongUser);
    }
    match code.state {
        CodeState::Pending => {}
        CodeState::Redeemed { .. } => return Err(StoreError::CodeAlreadyUsed),
        CodeState::Expired => return Err(StoreError::CodeExpired),
    }
    if devices::key_in_use(&mut *tx, &w.public_key).await? {
        return Err(StoreError::PublicKeyInUse);
    }
    let address = w
        .pool
        .first_free(&used_addresses(&mut *tx, backend).await?)
        .ok_or(StoreError::AddressPoolExhausted {
            network: w.pool.network,
        })?;
    users::upsert(&mut *tx, &w.user, now).await?;

    let token = random_token();
    let expires_at = w.key_lifetime.map(|l| now.saturating_add(duration_ms(l)));
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO devices (username, name, hostname, public_key, tunnel_address, status, \
         token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8) RETURNING id",
    )
    .bind(&w.username)
    .bind(&code.device_name)
    .bind(&w.hostname)
    .bind(encode_key(&w.public_key))
    .bind(address.to_string())
    .bind(hash_secret(&token))
    .bind(now)
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    let redeemed = sqlx::query(
        "UPDATE enrolment_codes SET redeemed_at = $1, device_id = $2 \
         WHERE code_hash = $3 AND redeemed_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .bind(&w.code_hash)
    .execute(&mut *tx)
    .await?;
    if redeemed.rows_affected() != 1 {
        return Err(StoreError::CodeAlreadyUsed);
    }
    let device = devices::by_id(&mut *tx, id)
        .await?
        .ok_or(StoreError::DeviceNotFound(id))?;
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
