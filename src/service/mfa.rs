//! The second factor's flows: the code check every route shares (limits, audit), the steps of login and enrolment, access windows, IT resets and codes, re-authentication.
//!
//! Registration (the bootstrap rule: something IT handed out, never a password alone) lives
//! in [`register`](self::register); adapters call these functions and render.

use std::net::IpAddr;

use crate::api::mfa::{MfaRegistration, UnlockResponse};
use crate::audit::{Action, Outcome};
use crate::mfa::Kit;
use crate::store::{Device, Factor, WindowOpening};

use super::context::Record;
use super::roles::{Actor, Role, RoleSet};
use super::{ServiceError, Services};

mod code;
pub mod register;

use code::check_code;
pub(super) use code::{accepted, limiter_key, refused, verify, GoodCode};

/// How long a registration code from IT stays usable.
pub const REGISTRATION_CODE_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Where a window was opened from (`mfa_windows.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSource {
    /// `POST /api/v1/device/unlock` (`sesame-agent up`/`unlock`).
    Agent,
    /// The `/mon-acces` page (stock WireGuard clients).
    Web,
}

impl WindowSource {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowSource::Agent => "agent",
            WindowSource::Web => "web",
        }
    }
}

/// The kit, or `NotWired` when `[mfa]` is off (callers that reach here need it).
fn kit(svc: &Services) -> Result<&Kit, ServiceError> {
    svc.mfa()?
        .ok_or(ServiceError::NotWired("the second factor"))
}

/// Whether `username` can answer a code: a confirmed factor (TOTP), or always (RADIUS: the
/// académie's server knows every user).
pub(super) async fn has_factor(
    svc: &Services,
    kit: &Kit,
    username: &str,
) -> Result<bool, ServiceError> {
    match factor_for_code(svc, kit, username).await {
        Ok(_) => Ok(true),
        Err(ServiceError::MfaNotRegistered) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The factor a code of `username` is checked against, read once: `MfaNotRegistered` without
/// a confirmed one (TOTP); `None` when the provider knows every user (RADIUS).
async fn factor_for_code(
    svc: &Services,
    kit: &Kit,
    username: &str,
) -> Result<Option<Factor>, ServiceError> {
    if !kit.provider.needs_registration() {
        return Ok(None);
    }
    registered(kit, svc.store().mfa_factor(username).await?)
}

/// [`factor_for_code`] from the user's `factor` row, read already.
fn registered(kit: &Kit, factor: Option<Factor>) -> Result<Option<Factor>, ServiceError> {
    if !kit.provider.needs_registration() {
        return Ok(None);
    }
    match factor {
        Some(f) if f.is_registered() => Ok(Some(f)),
        _ => Err(ServiceError::MfaNotRegistered),
    }
}

/// The `[roles]` name of a role, as `[mfa] web_roles` lists them.
fn config_role_name(role: Role) -> &'static str {
    match role {
        Role::VpnUser => "vpn_users",
        Role::ItStaff => "it_staff",
        Role::Auditor => "auditors",
    }
}

/// The second step of a web login, after the password: for a holder of a role of `[mfa]
/// web_roles`, a code is needed (`mfa_required` without one; `mfa_not_registered` without a
/// factor: the page then asks for IT's registration code). Returns the good code, its step
/// not spent: the login spends it in the same write as its session.
pub(super) async fn login_step(
    svc: &Services,
    username: &str,
    roles: &RoleSet,
    otp: Option<&str>,
    source_ip: IpAddr,
) -> Result<Option<GoodCode>, ServiceError> {
    let Some(kit) = svc.mfa()? else {
        return Ok(None);
    };
    let config = svc.config();
    let web_roles = config
        .mfa
        .as_ref()
        .map(|m| m.web_roles.as_slice())
        .unwrap_or(&[]);
    if !roles
        .iter()
        .any(|r| web_roles.iter().any(|w| w == config_role_name(r)))
    {
        return Ok(None);
    }
    let factor = factor_for_code(svc, kit, username).await?;
    let code = otp
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or(ServiceError::MfaRequired)?;
    check_code(
        svc,
        username,
        code,
        "login",
        Some(source_ip),
        factor.as_ref(),
    )
    .await
    .map(Some)
}

/// What enrolment does about the second factor, decided after the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnrolStep {
    /// `[mfa]` off, or the code was checked.
    Done,
    /// The user has no factor: the enrolment answer carries one to register.
    Register,
}

/// The second step of an enrolment, after the password: once the user has a factor, a code
/// (`otp`) is needed; without one, the enrolment registers one (code + password: what IT
/// handed out).
pub(super) async fn enrol_step(
    svc: &Services,
    username: &str,
    otp: Option<&str>,
    source_ip: IpAddr,
) -> Result<EnrolStep, ServiceError> {
    let Some(kit) = svc.mfa()? else {
        return Ok(EnrolStep::Done);
    };
    if has_factor(svc, kit, username).await? {
        let code = otp
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(ServiceError::MfaRequired)?;
        verify(svc, username, code, "enrol", Some(source_ip)).await?;
        return Ok(EnrolStep::Done);
    }
    Ok(EnrolStep::Register)
}

/// The factor an enrolment hands out to register (after the device was created).
pub(super) async fn enrol_registration(
    svc: &Services,
    username: &str,
) -> Result<MfaRegistration, ServiceError> {
    register::begin(svc, kit(svc)?, username).await
}

/// The end of `device`'s open window, if one is open (`DeviceConfig.mfa_until`).
pub async fn window_until(svc: &Services, device_id: i64) -> Result<Option<i64>, ServiceError> {
    if svc.config().mfa.is_none() {
        return Ok(None);
    }
    let now = svc.now_ms();
    Ok(svc
        .store()
        .mfa_window(device_id)
        .await?
        .filter(|w| w.is_open(now))
        .map(|w| w.expires_at))
}

/// Opens the window of `device` for `[mfa] session` with the good `code` that asked for it:
/// its step spent, `mfa.verified` and `mfa.window_opened` written, all in one group commit;
/// the gateway told at once. Returns its end; a step spent meanwhile opens nothing and answers
/// like a wrong code.
async fn open_window(
    svc: &Services,
    device: &Device,
    source: WindowSource,
    source_ip: Option<IpAddr>,
    code: GoodCode,
) -> Result<i64, ServiceError> {
    let config = svc.config();
    let session = config
        .mfa
        .as_ref()
        .map(|m| m.session)
        .ok_or(ServiceError::NotWired("the second factor"))?;
    let until = svc
        .now_ms()
        .saturating_add(crate::time::duration_ms(session));
    let opened = Record {
        actor: &device.username,
        action: Action::MfaWindowOpened,
        target: &format!("device:{}", device.id),
        outcome: Outcome::Success,
        source_ip,
        details: serde_json::json!({
            "device_id": device.id,
            "until": crate::time::format(until),
            "source": source.as_str(),
        }),
    }
    .event();
    let written = svc
        .store()
        .mfa_unlock(WindowOpening {
            device_id: device.id,
            username: device.username.clone(),
            source: source.as_str().to_string(),
            expires_at: until,
            step: code.step,
            audit: vec![code.event, opened],
        })
        .await?;
    if !written {
        let route = match source {
            WindowSource::Agent => "unlock",
            WindowSource::Web => "mon_acces",
        };
        return Err(refused(svc, &device.username, route, source_ip, code.method).await);
    }
    accepted(svc, &device.username, code.admitted).await;
    if let Some(p) = svc.publisher() {
        // The change log names this device (its window's row): the publication applies its
        // peer alone (its protected rules open), not the whole set, and concurrent unlocks
        // share one. (No read of the owner's groups: the publication reads the device again.)
        p.publish_now().await;
    }
    Ok(until)
}

/// `POST /api/v1/device/unlock`: the device's owner types a code; the device's window opens.
pub async fn unlock(
    svc: &Services,
    token: &str,
    code: &str,
    source_ip: IpAddr,
) -> Result<UnlockResponse, ServiceError> {
    // The device and its owner's factor in one read.
    let (device, factor) = svc
        .store()
        .mfa_device_by_token(token)
        .await?
        .ok_or(ServiceError::Unauthenticated)?;
    let device = super::devices::usable(svc, device)?;
    let factor = registered(kit(svc)?, factor)?;
    let ip = Some(source_ip);
    let good = check_code(svc, &device.username, code, "unlock", ip, factor.as_ref()).await?;
    let until = open_window(svc, &device, WindowSource::Agent, ip, good).await?;
    Ok(UnlockResponse {
        expires_at: crate::time::format(until),
    })
}

/// What `/mon-acces` shows about the second factor: whether the user's resources need one,
/// whether they have a factor, and each of their devices' open window.
#[derive(Debug, Clone, Default)]
pub struct WebAccess {
    /// `[mfa]` is on and some resource the user is granted needs it (`mfa = true`).
    pub needed: bool,
    /// Those resources, by name.
    pub protected: Vec<String>,
    /// The user can answer a code (a confirmed factor, or RADIUS).
    pub has_factor: bool,
    /// Device id → end of its open window (unix ms); absent: closed.
    pub windows: std::collections::HashMap<i64, i64>,
}

/// The second factor as `/mon-acces` shows it to `actor` for their `devices`, given the
/// resources their groups grant (`granted`).
pub async fn web_access(
    svc: &Services,
    actor: &Actor,
    granted: &[String],
    devices: &[Device],
) -> Result<WebAccess, ServiceError> {
    actor.require(Role::VpnUser)?;
    let Some(kit) = svc.mfa()? else {
        return Ok(WebAccess::default());
    };
    let config = svc.config();
    let protected: Vec<String> = granted
        .iter()
        .filter(|r| config.policy.needs_mfa(r))
        .cloned()
        .collect();
    if protected.is_empty() {
        return Ok(WebAccess::default());
    }
    let mut windows = std::collections::HashMap::new();
    for d in devices.iter().filter(|d| d.username == actor.username) {
        if let Some(until) = window_until(svc, d.id).await? {
            windows.insert(d.id, until);
        }
    }
    Ok(WebAccess {
        needed: true,
        protected,
        has_factor: has_factor(svc, kit, &actor.username).await?,
        windows,
    })
}

/// `/mon-acces` (a laptop with a stock WireGuard client): the signed-in owner of `device_id`
/// types a code; that active device's window opens (source `web`: it closes at web logout too).
/// Same limits and audit as `POST /api/v1/device/unlock`. Returns its end (unix ms).
pub async fn unlock_web(
    svc: &Services,
    actor: &Actor,
    device_id: i64,
    code: &str,
    source_ip: IpAddr,
) -> Result<i64, ServiceError> {
    actor.require(Role::VpnUser)?;
    let kit = kit(svc)?;
    let device = svc
        .store()
        .device(device_id)
        .await?
        .filter(|d| d.username == actor.username)
        .ok_or(ServiceError::NotFound)?;
    let device = super::devices::usable(svc, device)?;
    let factor = factor_for_code(svc, kit, &device.username).await?;
    let code = code.trim();
    if code.is_empty() {
        return Err(ServiceError::MfaRequired);
    }
    let ip = Some(source_ip);
    let good = check_code(
        svc,
        &device.username,
        code,
        "mon_acces",
        ip,
        factor.as_ref(),
    )
    .await?;
    open_window(svc, &device, WindowSource::Web, ip, good).await
}

/// `POST /api/v1/device/lock` (`sesame-agent down`): closes the device's window (reason
/// `down`); nothing open is not an error.
pub async fn lock(svc: &Services, token: &str, source_ip: IpAddr) -> Result<(), ServiceError> {
    let device = super::devices::by_token(svc, token).await?;
    if svc.config().mfa.is_none() {
        return Ok(());
    }
    if svc.store().mfa_close_window(device.id, "down").await? {
        closed(svc, &device.username, &[device.id], "down", Some(source_ip)).await;
    }
    Ok(())
}

/// Audits windows that closed (`mfa.window_closed`) and tells the gateway.
async fn closed(
    svc: &Services,
    actor: &str,
    devices: &[i64],
    reason: &str,
    source_ip: Option<IpAddr>,
) {
    for id in devices {
        svc.audit(Record {
            actor,
            action: Action::MfaWindowClosed,
            target: &format!("device:{id}"),
            outcome: Outcome::Success,
            source_ip,
            details: serde_json::json!({ "device_id": id, "reason": reason }),
        })
        .await;
    }
    if !devices.is_empty() {
        if let Some(p) = svc.publisher() {
            p.publish_now().await;
        }
    }
}

/// A revoked device's open window closes (reason `revoked`); a failure is logged (the
/// revocation committed, and the device's peer leaves the gateway anyway).
pub(super) async fn device_revoked(
    svc: &Services,
    actor: &str,
    device_id: i64,
    source_ip: Option<IpAddr>,
) {
    if svc.config().mfa.is_none() {
        return;
    }
    match svc.store().mfa_close_window(device_id, "revoked").await {
        Ok(true) => closed(svc, actor, &[device_id], "revoked", source_ip).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(device_id, error = %e, "cannot close the revoked device's window"),
    }
}

/// Closes the open windows of `username` (those opened from `source` only, when given) for
/// `reason` (`logout`, `reset`, `revoked`), audited and published.
pub(super) async fn close_user_windows(
    svc: &Services,
    actor: &str,
    username: &str,
    source: Option<WindowSource>,
    reason: &str,
    source_ip: Option<IpAddr>,
) -> Result<(), ServiceError> {
    if svc.config().mfa.is_none() {
        return Ok(());
    }
    let ids = svc
        .store()
        .mfa_close_user_windows(username, source.map(WindowSource::as_str), reason)
        .await?;
    closed(svc, actor, &ids, reason, source_ip).await;
    Ok(())
}

/// Whether the owner of `device` used the second factor within `[devices] reauth_interval`
/// (a code accepted, or the device's own enrolment): else its rotation is refused with
/// `reauth_required` until `sesame-agent unlock`.
pub async fn reauth_check(svc: &Services, device: &Device) -> Result<(), ServiceError> {
    let config = svc.config();
    if config.mfa.is_none() {
        return Ok(());
    }
    let last_used = svc
        .store()
        .mfa_factor(&device.username)
        .await?
        .and_then(|f| f.last_used_at)
        .unwrap_or(i64::MIN);
    let since = last_used.max(device.created_at);
    let interval = crate::time::duration_ms(config.devices.reauth_interval);
    if svc.now_ms().saturating_sub(since) > interval {
        return Err(ServiceError::ReauthRequired);
    }
    Ok(())
}

/// IT resets the factor of `username` (phone lost): the factor and its recovery codes go, open
/// windows close (reason `reset`), and a one-time registration code is returned (shown once).
/// A delegated technician may reset only users of their scope. Audited `mfa.reset`.
pub async fn reset(
    svc: &Services,
    actor: &Actor,
    username: &str,
    source_ip: Option<IpAddr>,
) -> Result<String, ServiceError> {
    let username = may_act_on(svc, actor, username).await?;
    let had = svc.store().mfa_remove_factor(&username).await?;
    close_user_windows(svc, &actor.username, &username, None, "reset", source_ip).await?;
    registration_code(
        svc,
        actor,
        &username,
        source_ip,
        serde_json::json!({ "had_factor": had }),
    )
    .await
}

/// IT issues a one-time registration code for `username` (`sesame mfa code`): with their
/// password, it registers a factor (web page or `POST /api/v1/mfa/register`). The current
/// factor, if any, stays until a new one is confirmed. Audited `mfa.reset` with
/// `"code_only": true`.
pub async fn issue_code(
    svc: &Services,
    actor: &Actor,
    username: &str,
    source_ip: Option<IpAddr>,
) -> Result<String, ServiceError> {
    let username = may_act_on(svc, actor, username).await?;
    registration_code(
        svc,
        actor,
        &username,
        source_ip,
        serde_json::json!({ "code_only": true }),
    )
    .await
}

/// Issues a one-time registration code for `username` and audits it as `mfa.reset` with
/// `details`: the end of both an IT reset and `sesame mfa code`.
async fn registration_code(
    svc: &Services,
    actor: &Actor,
    username: &str,
    source_ip: Option<IpAddr>,
    details: serde_json::Value,
) -> Result<String, ServiceError> {
    let code = svc
        .store()
        .mfa_issue_registration_code(username, REGISTRATION_CODE_TTL)
        .await?;
    svc.audit(Record {
        actor: &actor.username,
        action: Action::MfaReset,
        target: username,
        outcome: Outcome::Success,
        source_ip,
        details,
    })
    .await;
    Ok(code)
}

/// The factor of `username` as IT sees it on the user page (kind, registered at, last used);
/// `None` when `[mfa]` is off or the user has none. IT staff within their scope only.
pub async fn factor_of(
    svc: &Services,
    actor: &Actor,
    username: &str,
) -> Result<Option<crate::store::Factor>, ServiceError> {
    if svc.mfa()?.is_none() {
        return Ok(None);
    }
    let username = may_act_on(svc, actor, username).await?;
    Ok(svc
        .store()
        .mfa_factor(&username)
        .await?
        .filter(crate::store::Factor::is_registered))
}

/// IT staff within their delegated scope (the CLI: everyone); returns the stored spelling.
async fn may_act_on(svc: &Services, actor: &Actor, username: &str) -> Result<String, ServiceError> {
    kit(svc)?;
    actor.require(Role::ItStaff)?;
    let username = crate::store::normalize_username(username);
    if username.is_empty() {
        return Err(ServiceError::Invalid("a user name is needed".into()));
    }
    if actor.is_delegated() {
        let groups = svc
            .store()
            .user(&username)
            .await?
            .map(|u| u.groups)
            .unwrap_or_default();
        if !actor.manages(&groups) {
            return Err(ServiceError::Forbidden);
        }
    }
    Ok(username)
}

#[cfg(test)]
#[path = "mfa_tests.rs"]
mod tests;
