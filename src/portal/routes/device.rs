//! Laptop routes: enrolment with a one-time code, current configuration, key rotation.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;

use crate::api::{DeviceConfig, EnrolRequest, GatewayInfo, ResourceInfo, RotateRequest};
use crate::audit::{Action, AuditContext, Outcome};
use crate::control::resources_for;
use crate::store::{AddressPool, Device, DeviceStatus};

use crate::portal::auth::{roles_for, Role};
use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, BearerToken, ClientIp};
use crate::portal::state::{audit, AppState, SharedState};
use crate::portal::time::rfc3339;

/// How long an enrolled key stays valid before the agent must rotate it.
pub const KEY_LIFETIME: std::time::Duration = std::time::Duration::from_secs(180 * 86_400);

/// Decodes and vets a laptop public key: 32 bytes of base64, not all zeros, not the gateway's.
pub fn parse_public_key(s: &str, gateway_key: &[u8; 32]) -> Result<[u8; 32], ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| ApiError::InvalidPublicKey("pas du base64 / not base64"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ApiError::InvalidPublicKey("32 octets attendus / 32 bytes expected"))?;
    if key == [0u8; 32] {
        return Err(ApiError::InvalidPublicKey("clé nulle / all-zero key"));
    }
    if &key == gateway_key {
        return Err(ApiError::InvalidPublicKey(
            "c'est la clé de la passerelle / it is the gateway's key",
        ));
    }
    Ok(key)
}

fn check_hostname(h: &str) -> Result<(), ApiError> {
    if h.trim().is_empty() || h.len() > 253 || h.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "hostname: 1 à 253 caractères imprimables / 1 to 253 printable characters".into(),
        ));
    }
    Ok(())
}

fn b64(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The configuration a device receives: gateway, address, routes to its granted resources.
pub fn device_config(state: &AppState, device: &Device, groups: &[String]) -> DeviceConfig {
    let policy = &state.config.policy;
    let names = resources_for(policy, groups);
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
            public_key: b64(&state.control.gateway_public_key()),
            endpoint: state.config.gateway.endpoint.clone(),
        },
        allowed_ips: rules.networks().iter().map(ToString::to_string).collect(),
        dns: state
            .config
            .gateway
            .dns
            .iter()
            .map(ToString::to_string)
            .collect(),
        device_token: None,
        expires_at: device.expires_at.map(rfc3339).unwrap_or_default(),
        resources,
    }
}

/// `POST /api/v1/enrol`
#[utoipa::path(post, path = "/api/v1/enrol", request_body = EnrolRequest,
    responses((status = 201, body = DeviceConfig), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409), (status = 410), (status = 429), (status = 503)))]
pub async fn enrol(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> Result<(StatusCode, Json<DeviceConfig>), ApiError> {
    let username = req.username.trim().to_string();
    if let Err(limited) = state.limiter.check(&username, ip, Instant::now()) {
        return Err(crate::portal::routes::auth::too_many_attempts(
            &state, "enrol", &username, ip, limited,
        )
        .await);
    }
    let result = enrol_inner(&state, &username, ip, &req).await;
    match &result {
        Ok(_) => {
            state.limiter.record_success(&username);
            state.metrics.enrolment(true);
        }
        Err(e) => {
            state.metrics.enrolment(false);
            if counts_as_failure(e) {
                state.limiter.record_failure(&username, ip, Instant::now());
            }
            audit(
                &state.store,
                &username,
                Action::EnrolRejected,
                &username,
                outcome_of(e),
                Some(ip),
                serde_json::json!({ "reason": e.code(), "hostname": req.hostname }),
            )
            .await;
        }
    }
    result.map(|cfg| (StatusCode::CREATED, Json(cfg)))
}

/// Errors that a guesser produces: wrong password, wrong or stale code.
fn counts_as_failure(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::InvalidCredentials
            | ApiError::EmptyPassword
            | ApiError::InvalidCode
            | ApiError::CodeExpired
            | ApiError::CodeAlreadyUsed
            | ApiError::CodeWrongUser
    )
}

pub(crate) fn outcome_of(e: &ApiError) -> Outcome {
    if e.status() == StatusCode::FORBIDDEN || e.status() == StatusCode::UNAUTHORIZED {
        Outcome::Denied
    } else {
        Outcome::Failure
    }
}

async fn enrol_inner(
    state: &AppState,
    username: &str,
    ip: std::net::IpAddr,
    req: &EnrolRequest,
) -> Result<DeviceConfig, ApiError> {
    let key = parse_public_key(&req.public_key, &state.control.gateway_public_key())?;
    check_hostname(&req.hostname)?;
    if req.code.trim().is_empty() || req.code.len() > 128 {
        return Err(ApiError::InvalidCode);
    }
    let user = state.authenticate(username, &req.password).await?;
    if user.disabled {
        return Err(ApiError::AccountDisabled);
    }
    if !roles_for(&state.config.roles, &user.groups).contains(&Role::VpnUser) {
        return Err(ApiError::NotVpnUser);
    }
    let enrolled = state
        .store
        .enrol(
            &crate::store::EnrolRequest {
                code: req.code.trim(),
                user: &user,
                public_key: key,
                hostname: req.hostname.trim(),
                key_lifetime: Some(KEY_LIFETIME),
            },
            &AddressPool::from_config(&state.config),
            &AuditContext::new(user.username.to_lowercase(), Some(ip.to_string())),
        )
        .await?;
    state
        .control
        .publish_device(&enrolled.device, &user.groups, None)
        .await;
    let mut cfg = device_config(state, &enrolled.device, &user.groups);
    cfg.device_token = Some(enrolled.token);
    Ok(cfg)
}

/// The active device holding this bearer token; a revoked one answers `device_revoked`.
async fn device_for_token(state: &AppState, token: &str) -> Result<Device, ApiError> {
    let device = state
        .store
        .device_by_token(token)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if device.status == DeviceStatus::Revoked {
        return Err(ApiError::DeviceRevoked);
    }
    Ok(device)
}

/// `GET /api/v1/device/config`
#[utoipa::path(get, path = "/api/v1/device/config", security(("device_token" = [])),
    responses((status = 200, body = DeviceConfig), (status = 401), (status = 403)))]
pub async fn config(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
) -> Result<Json<DeviceConfig>, ApiError> {
    let device = device_for_token(&state, &token).await?;
    let groups = user_groups(&state, &device.username).await?;
    Ok(Json(device_config(&state, &device, &groups)))
}

async fn user_groups(state: &AppState, username: &str) -> Result<Vec<String>, ApiError> {
    Ok(state
        .store
        .user(username)
        .await?
        .map(|u| u.groups)
        .unwrap_or_default())
}

/// `POST /api/v1/device/rotate`
#[utoipa::path(post, path = "/api/v1/device/rotate", request_body = RotateRequest, security(("device_token" = [])),
    responses((status = 200, body = DeviceConfig), (status = 400), (status = 401), (status = 403), (status = 409)))]
pub async fn rotate(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<RotateRequest>,
) -> Result<Json<DeviceConfig>, ApiError> {
    let device = device_for_token(&state, &token).await?;
    let old_key = device.public_key;
    let rotated = match parse_public_key(&req.public_key, &state.control.gateway_public_key()) {
        Ok(key) => state
            .store
            .rotate_key(
                device.id,
                &key,
                Some(KEY_LIFETIME),
                &AuditContext::new(device.username.clone(), Some(ip.to_string())),
            )
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let device = match rotated {
        Ok(d) => d,
        Err(e) => {
            // A refused rotation of a known device is audited with its reason.
            audit(
                &state.store,
                &device.username,
                Action::DeviceRotated,
                &format!("device:{}", device.id),
                Outcome::Failure,
                Some(ip),
                serde_json::json!({
                    "username": device.username,
                    "old_public_key": device.public_key_base64(),
                    "reason": e.code(),
                }),
            )
            .await;
            return Err(e);
        }
    };
    state.metrics.rotation();
    let groups = match user_groups(&state, &device.username).await {
        Ok(groups) => groups,
        Err(e) => {
            // The rotation committed: the gateway must get it even though this answer fails.
            state.control.publish_now().await;
            return Err(e);
        }
    };
    state
        .control
        .publish_device(&device, &groups, Some(old_key))
        .await;
    Ok(Json(device_config(&state, &device, &groups)))
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
            assert_eq!(e.code(), "invalid_public_key", "{bad:?}");
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
