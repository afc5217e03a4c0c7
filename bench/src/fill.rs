//! Bulk fill of a store for the scale benchmarks (`change_detect`, `portal_scale`): users with one
//! device each, written 1,000 rows per INSERT as enrolments and syncs leave them (the change
//! log's `enrolled` rows come from the database's own triggers), optionally with a realistic mix
//! of groups, revocations and disabled accounts ([`Mix`]); and the whole-table poll the
//! publisher ran before the change log ([`SCAN`]), the "before" of those benchmarks.

use sesame::store::Store;

/// The publisher's poll before the change log (`Store::devices_version`, removed by migration
/// 0015), verbatim: an aggregate over the whole `devices` table, run every second.
pub const SCAN: &str = "SELECT COUNT(*) AS n, COALESCE(MAX(id), 0) AS max_id, \
    COALESCE(MAX(rotated_at), 0) AS last_rotated, COALESCE(MAX(revoked_at), 0) AS last_revoked, \
    COALESCE(SUM(CASE WHEN status = 'revoked' THEN 1 ELSE 0 END), 0) AS revoked, \
    COALESCE(SUM(CASE WHEN suspended_at IS NULL THEN 0 ELSE 1 END), 0) AS suspended, \
    COALESCE(MAX(suspended_at), 0) AS last_suspended, \
    COALESCE(MAX(restored_at), 0) AS last_restored FROM devices";

/// Rows per INSERT statement while filling.
const FILL_ROWS: usize = 1_000;

/// The VPN users' group (`[roles] vpn_users` of the configuration that goes with [`Mix::Realistic`]).
pub const VPN_USERS: &str = "cn=personnels,ou=groups,dc=ac";
/// Granted `paie` (site `rectorat`): one user in 10.
pub const PAIE: &str = "cn=paie,ou=groups,dc=ac";
/// Granted `rh` (site `rectorat`): one user in 4.
pub const RH: &str = "cn=rh,ou=groups,dc=ac";
/// Granted `intranet` (site `dsden56`): one user in 2.
pub const INTRANET: &str = "cn=intranet,ou=groups,dc=ac";

/// Who the filled users are and what their devices are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Every user in `cn=staff` only (no grant), every device active: `change_detect`'s fill.
    Plain,
    /// By user number `n`: every user in [`VPN_USERS`] but one in 20 (`n % 20 == 7`), one in
    /// 10 also in [`PAIE`] (`n % 10 == 0`), one in 4 in [`RH`] (`n % 4 == 1`), one in 2 in
    /// [`INTRANET`] (`n % 2 == 0`); one device in 20 revoked (`n % 20 == 3`); one account in
    /// 100 disabled in the directory (`n % 100 == 11`).
    Realistic,
}

impl Mix {
    /// The group DNs of user `n` (normalized: lower case, as the directory sync stores them).
    pub fn groups(self, n: usize) -> Vec<&'static str> {
        match self {
            Mix::Plain => vec!["cn=staff"],
            Mix::Realistic => {
                let mut g = Vec::new();
                if n % 20 != 7 {
                    g.push(VPN_USERS);
                }
                if n.is_multiple_of(10) {
                    g.push(PAIE);
                }
                if n % 4 == 1 {
                    g.push(RH);
                }
                if n.is_multiple_of(2) {
                    g.push(INTRANET);
                }
                g
            }
        }
    }

    pub fn revoked(self, n: usize) -> bool {
        self == Mix::Realistic && n % 20 == 3
    }

    pub fn disabled(self, n: usize) -> bool {
        self == Mix::Realistic && n % 100 == 11
    }
}

/// User `n`'s login.
pub fn username(n: usize) -> String {
    format!("u{n}")
}

/// The tunnel address of user `n`'s device: 100.64.0.2 onwards (a /14 holds 100,000 of them).
pub fn tunnel_address(n: usize) -> anyhow::Result<std::net::Ipv4Addr> {
    Ok(std::net::Ipv4Addr::from(
        0x6440_0000u32 + 2 + u32::try_from(n)?,
    ))
}

/// Adds users and devices `from..to` (one device per user, created at `now_ms`).
pub async fn fill(
    store: &Store,
    from: usize,
    to: usize,
    mix: Mix,
    now_ms: i64,
) -> anyhow::Result<()> {
    let mut i = from;
    while i < to {
        let end = (i + FILL_ROWS).min(to);
        let mut users = String::from(
            "INSERT INTO users (username, dn, display_name, groups, disabled, last_sync) VALUES ",
        );
        let mut memberships = String::from("INSERT INTO user_groups (username, group_dn) VALUES ");
        let mut devices = String::from(
            "INSERT INTO devices (username, name, hostname, public_key, tunnel_address, status, \
             token_hash, created_at, revoked_at, revoke_reason, search_text) VALUES ",
        );
        let mut first_membership = true;
        for n in i..end {
            let sep = if n == i { "" } else { "," };
            let groups = mix.groups(n);
            let json = serde_json::to_string(&groups)?;
            let disabled = i32::from(mix.disabled(n));
            users.push_str(&format!(
                "{sep}('u{n}', 'uid=u{n},ou=people,dc=ac', 'U {n}', '{json}', {disabled}, 0)"
            ));
            for g in groups {
                let sep = if first_membership { "" } else { "," };
                first_membership = false;
                memberships.push_str(&format!("{sep}('u{n}', '{g}')"));
            }
            let ip = tunnel_address(n)?;
            let mut key = [7u8; 32];
            key[..8].copy_from_slice(&(n as u64).to_le_bytes());
            let key = sesame::key::PublicKey::from_bytes(key)?.to_base64();
            let (status, revoked_at, reason) = if mix.revoked(n) {
                ("revoked", now_ms.to_string(), "'revoked by it-staff'")
            } else {
                ("active", "NULL".to_string(), "NULL")
            };
            // What `search_text` holds for an enrolled device (owner, name, host name, folded).
            let search = sesame::text::fold(&format!("u{n}\nPC-{n}\npc-{n}"));
            devices.push_str(&format!(
                "{sep}('u{n}', 'PC-{n}', 'pc-{n}', '{key}', '{ip}', '{status}', 'tok-{n:060}', \
                 {now_ms}, {revoked_at}, {reason}, '{search}')"
            ));
        }
        let mut tx = store.pool().begin().await?;
        sqlx::query(&users).execute(&mut *tx).await?;
        if !first_membership {
            sqlx::query(&memberships).execute(&mut *tx).await?;
        }
        sqlx::query(&devices).execute(&mut *tx).await?;
        tx.commit().await?;
        i = end;
    }
    Ok(())
}
