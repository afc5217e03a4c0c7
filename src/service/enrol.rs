//! Enrolment: vetting a laptop's key and host name, redeeming a code for a directory user, and
//! the configuration a device receives (gateway, address, routes to its granted resources).

use std::time::Duration;

use base64::Engine as _;

use crate::api::{DeviceConfig, GatewayInfo, ResourceInfo};
use crate::audit::AuditContext;
use crate::config::Config;
use crate::directory::{Directory, DirectoryUser};
use crate::store::{AddressPool, Device, Store};

use super::roles::{Actor, Role};
use super::{Publisher, ServiceError};

/// Decodes and vets a laptop public key: 32 bytes of base64, not all zeros, not the gateway's.
pub fn parse_public_key(s: &str, gateway_key: &[u8; 32]) -> Result<[u8; 32], ServiceError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| ServiceError::InvalidPublicKey("pas du base64 / not base64"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ServiceError::InvalidPublicKey("32 octets attendus / 32 bytes expected"))?;
    if key == [0u8; 32] {
        return Err(ServiceError::InvalidPublicKey("clé nulle / all-zero key"));
    }
    if &key == gateway_key {
        return Err(ServiceError::InvalidPublicKey(
            "c'est la clé de la passerelle / it is the gateway's key",
        ));
    }
    Ok(key)
}

/// A host name as the agent reports it: 1 to 253 printable characters.
pub fn check_hostname(h: &str) -> Result<(), ServiceError> {
    if h.trim().is_empty() || h.len() > 253 || h.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(
            "hostname: 1 à 253 caractères imprimables / 1 to 253 printable characters".into(),
        ));
    }
    Ok(())
}

fn b64(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The configuration a device receives: gateway, address, routes to its granted resources.
pub fn device_config(
    config: &Config,
    gateway_key: &[u8; 32],
    device: &Device,
    groups: &[String],
) -> DeviceConfig {
    let policy = &config.policy;
    let names = policy.resources_for_groups(groups.iter().map(String::as_str));
    let rules = policy.rules_for_resources(names.iter().map(String::as_str));
    let resources = names
        .iter()
        .filter_map(|n| policy.resource(n))
        .map(|r| ResourceInfo {
            name: r.name.clone(),
            description: r.description.clone(),
            networks: crate::policy::RuleSet::new(r.rules.iter().cloned())
                .networks()
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
        .collect();
    DeviceConfig {
        device_id: device.id,
        tunnel_address: device.tunnel_address.to_string(),
        gateway: GatewayInfo {
            public_key: b64(gateway_key),
            endpoint: config.gateway.endpoint.clone(),
        },
        allowed_ips: rules.networks().iter().map(ToString::to_string).collect(),
        dns: config.gateway.dns.iter().map(ToString::to_string).collect(),
        device_token: None,
        expires_at: device
            .expires_at
            .map(crate::store::rfc3339)
            .unwrap_or_default(),
        resources,
    }
}

/// What an enrolment needs.
#[derive(Clone, Copy)]
pub struct EnrolDeps<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    pub directory: &'a dyn Directory,
    /// How long the directory may take to authenticate.
    pub deadline: Duration,
    pub publisher: &'a dyn Publisher,
}

/// What the laptop sends.
#[derive(Debug, Clone, Copy)]
pub struct EnrolInput<'a> {
    pub code: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub public_key: &'a str,
    pub hostname: &'a str,
    pub source_ip: std::net::IpAddr,
}

/// `Directory::authenticate` bounded by `deadline`.
pub async fn authenticate(
    directory: &dyn Directory,
    deadline: Duration,
    username: &str,
    password: &str,
) -> Result<DirectoryUser, ServiceError> {
    match tokio::time::timeout(deadline, directory.authenticate(username, password)).await {
        Ok(r) => r.map_err(ServiceError::Directory),
        Err(_) => Err(ServiceError::DirectoryTimeout),
    }
}

/// Redeems a code: checks the key, the host name, the password and the VPN role, then creates
/// the device (one transaction in the store) and hands its peer to the gateway. Writes nothing
/// on refusal (the caller audits and counts refusals).
pub async fn enrol(
    deps: &EnrolDeps<'_>,
    input: EnrolInput<'_>,
) -> Result<DeviceConfig, ServiceError> {
    let gateway_key = deps.publisher.gateway_public_key();
    let key = parse_public_key(input.public_key, &gateway_key)?;
    check_hostname(input.hostname)?;
    if input.code.trim().is_empty() || input.code.len() > 128 {
        return Err(ServiceError::InvalidCode);
    }
    let user = authenticate(
        deps.directory,
        deps.deadline,
        input.username,
        input.password,
    )
    .await?;
    if user.disabled {
        return Err(ServiceError::AccountDisabled);
    }
    if !Actor::resolve(&deps.config.roles, &user.username, &user.groups).has(Role::VpnUser) {
        return Err(ServiceError::NotVpnUser);
    }
    let enrolled = deps
        .store
        .enrol(
            &crate::store::EnrolRequest {
                code: input.code.trim(),
                user: &user,
                public_key: key,
                hostname: input.hostname.trim(),
                key_lifetime: Some(deps.config.devices.key_lifetime),
            },
            &AddressPool::from_config(deps.config),
            &AuditContext::new(
                user.username.to_lowercase(),
                Some(input.source_ip.to_string()),
            ),
        )
        .await?;
    deps.publisher
        .publish_device(&enrolled.device, &user.groups, None)
        .await;
    let mut cfg = device_config(deps.config, &gateway_key, &enrolled.device, &user.groups);
    cfg.device_token = Some(enrolled.token);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: [u8; 32] = [7; 32];

    #[test]
    fn public_keys_are_vetted() {
        let good = b64(&[1; 32]);
        assert_eq!(parse_public_key(&good, &GW).expect("ok"), [1; 32]);
        for bad in [
            "",
            "*",
            "*)(uid=*",
            "\\",
            "\0",
            "AAAA",
            &b64(&[0; 32]),
            &b64(&GW),
        ] {
            let e = parse_public_key(bad, &GW).expect_err(bad);
            assert!(matches!(e, ServiceError::InvalidPublicKey(_)), "{bad:?}");
        }
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        assert!(parse_public_key(&short, &GW).is_err());
    }

    #[test]
    fn hostnames_are_vetted() {
        assert!(check_hostname("pc-marie").is_ok());
        assert!(check_hostname("").is_err());
        assert!(check_hostname("a\0b").is_err());
        assert!(check_hostname(&"a".repeat(254)).is_err());
    }
}
