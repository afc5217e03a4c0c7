//! Enrolled devices for the portal-side benchmarks (`feed_fanout`, `site_coldstart`,
//! `pair_store`): device `i`'s key and its enrolment through the store's own path (a code, then
//! the enrolment).

use std::time::Duration;

use anyhow::Context as _;
use sesame::audit::AuditContext;
use sesame::directory::DirectoryUser;
use sesame::key::PublicKey;
use sesame::store::{AddressPool, EnrolRequest, NewCode, Store};

/// Device `i`'s public key: distinct for every `i`, the same from run to run.
pub fn device_key(i: u32) -> PublicKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    b[31] = 0x40;
    PublicKey::from_bytes(b).expect("key")
}

/// Enrols device `i` (`PC-0000i`, key [`device_key`]) for user `u{i}`, a member of `groups`;
/// its id.
pub async fn enrol(
    store: &Store,
    pool: &AddressPool,
    i: u32,
    groups: Vec<String>,
) -> anyhow::Result<i64> {
    Ok(enrol_key(store, pool, i, device_key(i), groups).await?.0)
}

/// Enrols device `i` (`PC-0000i`) with `key` for user `u{i}`, a member of `groups`; its id and
/// tunnel address.
pub async fn enrol_key(
    store: &Store,
    pool: &AddressPool,
    i: u32,
    key: PublicKey,
    groups: Vec<String>,
) -> anyhow::Result<(i64, std::net::Ipv4Addr)> {
    let user = format!("u{i}");
    let code = store
        .create_code(
            &NewCode {
                username: user.clone(),
                device_name: format!("PC-{i:05}"),
                ttl: Duration::from_secs(3600),
            },
            &AuditContext::system(),
        )
        .await?
        .code;
    let person = DirectoryUser {
        username: user.clone(),
        dn: format!("uid={user},ou=people,dc=academie,dc=test"),
        display_name: user,
        groups,
        disabled: false,
    };
    let hostname = "pc-bench".parse().context("hostname")?;
    let d = store
        .enrol(
            &EnrolRequest {
                code: &code,
                user: &person,
                public_key: key,
                hostname: &hostname,
                key_lifetime: None,
            },
            pool,
            &AuditContext::system(),
        )
        .await?;
    Ok((d.device.id, d.device.tunnel_address))
}
