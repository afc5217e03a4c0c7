//! The audit event model: typed actions, outcomes, who acted, and the hash that chains events.
//!
//! `hash = SHA-256(prev_hash ‖ canonical JSON of {id, ts, actor, action, target, outcome,
//! source_ip, details})`, hex. Canonical JSON: object keys sorted, no whitespace. The id is part
//! of the hashed content, so removing or reordering rows breaks the chain.

use sha2::{Digest as _, Sha256};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. The string names ([`Action::as_str`]) are the contract of DESIGN §6: stored in
/// the log, filtered on by auditors, read by their tools. Add variants; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    AuthLogin,
    AuthLogout,
    AuthRateLimited,
    AuthSprayDetected,
    EnrolCodeCreated,
    EnrolCompleted,
    EnrolRejected,
    DeviceRevoked,
    DeviceSuspended,
    DeviceRestored,
    DeviceRotated,
    DeviceExpired,
    DirectorySync,
    DirectorySyncHeld,
    TunnelSessionStarted,
    TunnelSessionEnded,
    FlowAllowed,
    FlowDenied,
    ConfigReloaded,
    AuditRead,
    AuditPurged,
    AuditOverflow,
    AuditCheckpoint,
    MfaRegistered,
    MfaVerified,
    MfaFailed,
    MfaReset,
    MfaWindowOpened,
    MfaWindowClosed,
    SiteTokenCreated,
    SiteTokenRefused,
    JobsLeaderChanged,
}

impl Action {
    /// Every action, in a stable order (documentation, filters, tests).
    pub const ALL: [Action; 32] = [
        Action::AuthLogin,
        Action::AuthLogout,
        Action::AuthRateLimited,
        Action::AuthSprayDetected,
        Action::EnrolCodeCreated,
        Action::EnrolCompleted,
        Action::EnrolRejected,
        Action::DeviceRevoked,
        Action::DeviceSuspended,
        Action::DeviceRestored,
        Action::DeviceRotated,
        Action::DeviceExpired,
        Action::DirectorySync,
        Action::DirectorySyncHeld,
        Action::TunnelSessionStarted,
        Action::TunnelSessionEnded,
        Action::FlowAllowed,
        Action::FlowDenied,
        Action::ConfigReloaded,
        Action::AuditRead,
        Action::AuditPurged,
        Action::AuditOverflow,
        Action::AuditCheckpoint,
        Action::MfaRegistered,
        Action::MfaVerified,
        Action::MfaFailed,
        Action::MfaReset,
        Action::MfaWindowOpened,
        Action::MfaWindowClosed,
        Action::SiteTokenCreated,
        Action::SiteTokenRefused,
        Action::JobsLeaderChanged,
    ];

    /// The dotted name stored in the log (`enrol.completed`, `flow.denied`…).
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::AuthLogin => "auth.login",
            Action::AuthLogout => "auth.logout",
            Action::AuthRateLimited => "auth.rate_limited",
            Action::AuthSprayDetected => "auth.spray_detected",
            Action::EnrolCodeCreated => "enrol.code_created",
            Action::EnrolCompleted => "enrol.completed",
            Action::EnrolRejected => "enrol.rejected",
            Action::DeviceRevoked => "device.revoked",
            Action::DeviceSuspended => "device.suspended",
            Action::DeviceRestored => "device.restored",
            Action::DeviceRotated => "device.rotated",
            Action::DeviceExpired => "device.expired",
            Action::DirectorySync => "directory.sync",
            Action::DirectorySyncHeld => "directory.sync_held",
            Action::TunnelSessionStarted => "tunnel.session_started",
            Action::TunnelSessionEnded => "tunnel.session_ended",
            Action::FlowAllowed => "flow.allowed",
            Action::FlowDenied => "flow.denied",
            Action::ConfigReloaded => "config.reloaded",
            Action::AuditRead => "audit.read",
            Action::AuditPurged => "audit.purged",
            Action::AuditOverflow => "audit.overflow",
            Action::AuditCheckpoint => "audit.checkpoint",
            Action::MfaRegistered => "mfa.registered",
            Action::MfaVerified => "mfa.verified",
            Action::MfaFailed => "mfa.failed",
            Action::MfaReset => "mfa.reset",
            Action::MfaWindowOpened => "mfa.window_opened",
            Action::MfaWindowClosed => "mfa.window_closed",
            Action::SiteTokenCreated => "site.token_created",
            Action::SiteTokenRefused => "site.token_refused",
            Action::JobsLeaderChanged => "jobs.leader_changed",
        }
    }

    /// The action named `s`, if it is one.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an audited attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

/// Who acts and from where, recorded in every event built for that actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// A uid, `cli:NAME`, or `system`.
    pub actor: String,
    pub source_ip: Option<String>,
}

impl AuditContext {
    pub fn new(actor: impl Into<String>, source_ip: Option<String>) -> Self {
        AuditContext {
            actor: bounded_text(actor.into()),
            source_ip,
        }
    }

    /// The control plane itself (sync, expiry, the data plane's records).
    pub fn system() -> Self {
        AuditContext::new("system", None)
    }
}

/// Longest actor or target kept, in bytes. Both can be typed by anyone (a failed login records
/// the username as typed): without a bound, each unauthenticated request could write tens of
/// kilobytes to the log and its indexes (a 16 KiB username cost ~80 KB of SQLite per event).
/// Uids, DNs, device and resource names are far shorter.
pub const MAX_TEXT_BYTES: usize = 512;

/// `text` cut to [`MAX_TEXT_BYTES`] on a character boundary, marked with `…` when cut.
fn bounded_text(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        crate::text::truncate_to(&mut text, MAX_TEXT_BYTES - '…'.len_utf8());
        text.push('…');
    }
    text
}

/// An event to append; the store assigns id, ts and hashes. Built with [`NewAuditEvent::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: Action,
    pub target: String,
    pub outcome: Outcome,
    pub source_ip: Option<String>,
    pub details: serde_json::Value,
}

impl NewAuditEvent {
    /// A successful `action` by `ctx` on `target`, with no details yet.
    pub fn new(action: Action, ctx: &AuditContext, target: impl Into<String>) -> Self {
        NewAuditEvent {
            actor: ctx.actor.clone(),
            action,
            target: bounded_text(target.into()),
            outcome: Outcome::Success,
            source_ip: ctx.source_ip.clone(),
            details: serde_json::json!({}),
        }
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Event-specific details: a JSON object (anything else is wrapped as `{"value": …}`).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = match details {
            serde_json::Value::Null => serde_json::json!({}),
            v @ serde_json::Value::Object(_) => v,
            other => serde_json::json!({ "value": other }),
        };
        self
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    /// Unix milliseconds, UTC.
    pub ts: i64,
    pub actor: String,
    /// The dotted action name as stored (an [`Action`] name for every event this version writes).
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub source_ip: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Column names of the audit CSV export, shared by `sesame audit export` and the API.
pub const AUDIT_CSV_HEADER: [&str; 10] = [
    "id",
    "ts",
    "actor",
    "action",
    "target",
    "outcome",
    "source_ip",
    "details",
    "prev_hash",
    "hash",
];

impl AuditEvent {
    /// The event as one CSV record, in [`AUDIT_CSV_HEADER`] order (ts with milliseconds,
    /// details as canonical JSON: exactly the hashed content).
    pub fn csv_record(&self) -> [String; 10] {
        [
            self.id.to_string(),
            crate::time::format(self.ts),
            self.actor.clone(),
            self.action.clone(),
            self.target.clone(),
            self.outcome.as_str().to_string(),
            self.source_ip.clone().unwrap_or_default(),
            canonical_json(&self.details),
            self.prev_hash.clone(),
            self.hash.clone(),
        ]
    }

    /// The hash this event should carry given its fields and `prev_hash`.
    pub fn compute_hash(&self) -> String {
        let content = serde_json::json!({
            "id": self.id,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome.as_str(),
            "source_ip": self.source_ip,
            "details": self.details,
        });
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(canonical_json(&content).as_bytes());
        hex::encode(h.finalize())
    }
}

/// JSON with object keys sorted and no whitespace, recursively.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(inner) = map.get(k) {
                        write(inner, out);
                    }
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip_and_are_unique() {
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
        assert_eq!(Action::parse("auth.unknown"), None);
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1, {"z": null, "y": "é"}], "c": true}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"d":[1,{"y":"é","z":null}]},"b":1}"#
        );
    }

    #[test]
    fn hash_depends_on_every_field() {
        let base = AuditEvent {
            id: 1,
            ts: 1000,
            actor: "a".into(),
            action: "x.y".into(),
            target: "t".into(),
            outcome: Outcome::Success,
            source_ip: None,
            details: serde_json::json!({}),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let h = base.compute_hash();
        let mut other = base.clone();
        other.id = 2;
        assert_ne!(other.compute_hash(), h);
        let mut other = base.clone();
        other.source_ip = Some("198.18.0.1".into());
        assert_ne!(other.compute_hash(), h);
        let mut other = base;
        other.details = serde_json::json!({"k": 1});
        assert_ne!(other.compute_hash(), h);
    }

    #[test]
    fn typed_text_is_bounded_on_a_char_boundary() {
        let long = "é".repeat(8 * 1024); // 16 KiB
        let ctx = AuditContext::new(long.clone(), None);
        let ev = NewAuditEvent::new(Action::AuthLogin, &ctx, long);
        for text in [&ev.actor, &ev.target] {
            assert!(text.len() <= MAX_TEXT_BYTES, "{} bytes", text.len());
            assert!(text.ends_with('…'));
            assert!(text.starts_with("éé"));
        }
        let exact = "a".repeat(MAX_TEXT_BYTES);
        assert_eq!(
            NewAuditEvent::new(Action::AuthLogin, &ctx, exact.clone()).target,
            exact
        );
    }

    #[test]
    fn builder_defaults_and_details() {
        let ctx = AuditContext::new("alice", Some("198.18.0.2".into()));
        let ev = NewAuditEvent::new(Action::AuthLogout, &ctx, "alice")
            .outcome(Outcome::Failure)
            .details(serde_json::json!(3));
        assert_eq!(ev.actor, "alice");
        assert_eq!(ev.source_ip.as_deref(), Some("198.18.0.2"));
        assert_eq!(ev.details, serde_json::json!({"value": 3}));
        let ev =
            NewAuditEvent::new(Action::AuthLogout, &ctx, "alice").details(serde_json::Value::Null);
        assert_eq!(ev.details, serde_json::json!({}));
    }
}
