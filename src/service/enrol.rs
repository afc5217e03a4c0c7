//! Enrolment: vetting a laptop's key and host name, redeeming a code for a directory user, and
//! the configuration a device receives (gateway, address, routes to its granted resources).

use crate::api::{DeviceConfig, GatewayInfo, ResourceInfo, SitePeer};
use crate::audit::{Action, AuditContext};
use crate::config::{Config, LOCAL_SITE};
use crate::hostname::Hostname;
use crate::key::PublicKey;
use crate::store::{AddressPool, Device};

use super::attempts::Attempt;
use super::context::Record;
use super::roles::{Actor, Role};
use super::{ServiceError, Services};

/// Decodes and vets a laptop public key (see [`PublicKey::parse_peer`]): not the gateway's.
pub fn parse_public_key(s: &str, gateway_key: &PublicKey) -> Result<PublicKey, ServiceError> {
    PublicKey::parse_peer(s, gateway_key).map_err(ServiceError::InvalidPublicKey)
}

/// The configuration a device receives: address, routes to its granted resources, and one
/// WireGuard peer per site it has resources on (the local gateway of `sesame serve`, named
/// [`LOCAL_SITE`], for resources without a site, first); `gateway` is the first peer (older
/// agents), or the local gateway when nothing is granted.
pub fn device_config(
    config: &Config,
    gateway_key: &PublicKey,
    device: &Device,
    groups: &[String],
) -> DeviceConfig {
    let policy = &config.policy;
    let names = policy.resources_for_groups(groups.iter().map(String::as_str));
    let rules = policy.rules_for_resources(names.iter().map(String::as_str));
    let granted: Vec<&crate::policy::Resource> =
        names.iter().filter_map(|n| policy.resource(n)).collect();
    let resources = granted
        .iter()
        .map(|r| ResourceInfo {
            name: r.name.clone(),
            description: r.description.clone(),
            networks: networks(policy, [r.name.as_str()]),
            site: (!r.site.is_empty()).then(|| r.site.clone()),
            mfa: policy.needs_mfa(&r.name),
        })
        .collect();
    let peers = site_peers(config, gateway_key, &granted);
    let gateway = peers.first().map_or_else(
        || GatewayInfo {
            public_key: gateway_key.to_base64(),
            endpoint: config.gateway.endpoint.clone(),
        },
        |p| GatewayInfo {
            public_key: p.public_key.clone(),
            endpoint: p.endpoint.clone(),
        },
    );
    DeviceConfig {
        device_id: device.id,
        tunnel_address: device.tunnel_address.to_string(),
        gateway,
        allowed_ips: rules.networks().iter().map(ToString::to_string).collect(),
        dns: config.gateway.dns.iter().map(ToString::to_string).collect(),
        device_token: None,
        expires_at: device
            .expires_at
            .map(crate::time::format)
            .unwrap_or_default(),
        resources,
        peers,
        mfa_until: None,
        mfa_registration: None,
    }
}

/// The networks of resources `names` (CIDRs, merged as the gateway's rules are).
fn networks<'a>(
    policy: &crate::policy::Policy,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    policy
        .rules_for_resources(names)
        .networks()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// One peer per site with granted resources: the local gateway first (resources without a
/// site), then the `[[site]]`s in the configuration's order.
fn site_peers(
    config: &Config,
    gateway_key: &PublicKey,
    granted: &[&crate::policy::Resource],
) -> Vec<SitePeer> {
    let on = |site: &str| -> Vec<&str> {
        granted
            .iter()
            .filter(|r| r.site == site)
            .map(|r| r.name.as_str())
            .collect()
    };
    let mut peers = Vec::new();
    let local = on("");
    if !local.is_empty() {
        peers.push(SitePeer {
            site: LOCAL_SITE.to_string(),
            public_key: gateway_key.to_base64(),
            endpoint: config.gateway.endpoint.clone(),
            allowed_ips: networks(&config.policy, local),
        });
    }
    for site in &config.sites {
        let names = on(&site.name);
        if !names.is_empty() {
            peers.push(SitePeer {
                site: site.name.clone(),
                public_key: site.public_key.to_base64(),
                endpoint: site.endpoint.clone(),
                allowed_ips: networks(&config.policy, names),
            });
        }
    }
    peers
}

/// What the laptop sends, and from where.
#[derive(Debug, Clone, Copy)]
pub struct EnrolInput<'a> {
    pub code: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub public_key: &'a str,
    pub hostname: &'a str,
    pub source_ip: std::net::IpAddr,
    /// The device token of an agent that enrolled successfully before (its cookie).
    pub known_device: Option<&'a str>,
    /// The second factor's code: needed once the user has a factor (`mfa_required`).
    pub otp: Option<&'a str>,
}

/// A new device: its configuration (with its bearer token) and a device token for the agent's
/// next attempts (the `sesame-device` cookie).
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub config: DeviceConfig,
    pub device_token: String,
}

/// Redeems a code: the failure limiter, the key, the host name, the password and the VPN role,
/// then the device (created with its `enrol.completed` event in one transaction) handed to the
/// gateway. A refusal writes nothing but its `enrol.rejected` event (with the code as
/// `reason`); both count in the enrolment metrics. Like a login, a success makes the agent a
/// known device of the account: its next enrolment passes while strangers hold the lock.
pub async fn enrol(svc: &Services, input: EnrolInput<'_>) -> Result<Enrolled, ServiceError> {
    let username = input.username.trim();
    let attempt = Attempt {
        route: "enrol",
        username,
        source_ip: input.source_ip,
        known_device: input.known_device,
        started: std::time::Instant::now(),
    };
    let admitted = attempt.admit(svc).await?;
    let result = redeem(svc, username, &input).await.map_err(Attempt::blind);
    svc.metrics().enrolment(result.is_ok());
    match result {
        Ok(config) => Ok(Enrolled {
            config,
            device_token: attempt.succeeded(svc, admitted).await,
        }),
        Err(e) => {
            attempt.failed(svc, &e, true).await;
            svc.audit(Record {
                actor: username,
                action: Action::EnrolRejected,
                target: username,
                outcome: e.outcome(),
                source_ip: Some(input.source_ip),
                details: serde_json::json!({ "reason": e.audit_reason(), "hostname": input.hostname }),
            })
            .await;
            Err(e)
        }
    }
}

/// The checks and the store's transaction of [`enrol`]; writes nothing on refusal.
async fn redeem(
    svc: &Services,
    username: &str,
    input: &EnrolInput<'_>,
) -> Result<DeviceConfig, ServiceError> {
    let gateway_key = svc.gateway_public_key()?;
    let key = parse_public_key(input.public_key, &gateway_key)?;
    let hostname =
        Hostname::parse(input.hostname).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    if input.code.trim().is_empty() || input.code.len() > 128 {
        return Err(ServiceError::InvalidCode);
    }
    let user = svc.authenticate(username, input.password).await?;
    if user.disabled {
        return Err(ServiceError::AccountDisabled);
    }
    let config = svc.config();
    if !Actor::resolve(&config.roles, &user.username, &user.groups).has(Role::VpnUser) {
        return Err(ServiceError::NotVpnUser);
    }
    let mfa_step = super::mfa::enrol_step(svc, &user.username, input.otp, input.source_ip).await?;
    let enrolled = svc
        .store()
        .enrol(
            &crate::store::EnrolRequest {
                code: input.code.trim(),
                user: &user,
                public_key: key,
                hostname: &hostname,
                key_lifetime: Some(config.devices.key_lifetime),
            },
            &AddressPool::from_config(&config),
            &AuditContext::new(
                user.username.to_lowercase(),
                Some(input.source_ip.to_string()),
            ),
        )
        .await?;
    if let Some(publisher) = svc.publisher() {
        publisher.publish_now().await;
    }
    let mut cfg = device_config(&config, &gateway_key, &enrolled.device, &user.groups);
    cfg.device_token = Some(enrolled.token);
    if mfa_step == super::mfa::EnrolStep::Register {
        cfg.mfa_registration = Some(super::mfa::enrol_registration(svc, &user.username).await?);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_vetted() {
        let gw = PublicKey::from_bytes([7; 32]).expect("key");
        let good = crate::key::encode_base64(&[1; 32]);
        assert_eq!(
            parse_public_key(&good, &gw)
                .map(PublicKey::to_bytes)
                .expect("ok"),
            [1; 32]
        );
        for bad in [
            "",
            "*",
            "*)(uid=*",
            "\\",
            "\0",
            "AAAA",
            &crate::key::encode_base64(&[0; 32]),
            // 1: a point of small order.
            &crate::key::encode_base64(&std::array::from_fn(|i| u8::from(i == 0))),
            &gw.to_base64(),
        ] {
            let e = parse_public_key(bad, &gw).expect_err(bad);
            assert!(matches!(e, ServiceError::InvalidPublicKey(_)), "{bad:?}");
        }
    }
}

#[cfg(test)]
#[path = "enrol_tests.rs"]
mod site_peers_tests;
