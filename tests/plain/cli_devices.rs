//! `sesame devices list|revoke` against a real SQLite file filled through the store.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use std::path::Path;
use std::process::Output;

use crate::common::cli::{self, text};
use crate::common::config::TestConfig;
use crate::common::store_db::audit_of;

use sesame::audit::AuditContext;
use sesame::directory::DirectoryUser;
use sesame::store::{AddressPool, DeviceStatus, EnrolRequest, NewCode, Store};

/// `sesame ARGS --config CONFIG`, run by IT staff (`cli::OPERATOR`).
fn sesame(args: &[&str], config: &Path) -> Output {
    cli::sesame(args).config(config).output()
}

async fn enrol(store: &Store, user: &str, device: &str, key: u8) -> i64 {
    let code = store
        .create_code(
            &NewCode {
                username: user.into(),
                device_name: device.into(),
                ttl: std::time::Duration::from_secs(3600),
            },
            &AuditContext::system(),
        )
        .await
        .expect("code")
        .code;
    let person = DirectoryUser {
        username: user.into(),
        dn: format!("uid={user},ou=people,dc=example,dc=org"),
        display_name: user.into(),
        groups: vec![],
        disabled: false,
    };
    store
        .enrol(
            &EnrolRequest {
                code: &code,
                user: &person,
                public_key: sesame::key::PublicKey::from_bytes([key; 32]).expect("key"),
                hostname: &"pc-host".parse().expect("hostname"),
                key_lifetime: None,
            },
            &AddressPool {
                network: "100.64.0.0/24".parse().expect("net"),
                reserved: vec!["100.64.0.1".parse().expect("ip")],
            },
            &AuditContext::system(),
        )
        .await
        .expect("enrol")
        .device
        .id
}

#[tokio::test]
async fn list_and_revoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/sesame.db", dir.path().display());
    let config = dir.path().join("sesame.toml");
    TestConfig::new().database(&url).write(&config);
    let store = Store::connect(&url).await.expect("open");

    let out = sesame(&["devices", "list"], &config);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 1, "header only");

    let a = enrol(&store, "alice", "portable-compta", 1).await;
    let b = enrol(&store, "bob", "pc-paie", 2).await;

    let out = sesame(&["devices", "list"], &config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("ID"));
    assert!(lines[1].starts_with(&format!("{a} ")));
    for cell in [
        "alice",
        "portable-compta",
        "pc-host",
        "100.64.0.2",
        "active",
    ] {
        assert!(lines[1].contains(cell), "{cell} in {:?}", lines[1]);
    }
    assert!(lines[2].contains("100.64.0.3") && lines[2].contains("bob"));

    let out = sesame(
        &["devices", "list", "--format", "json", "--user", "bob"],
        &config,
    );
    assert!(out.status.success());
    let json: Vec<sesame::api::DeviceSummary> =
        serde_json::from_slice(&out.stdout).expect("json list");
    assert_eq!(json.len(), 1);
    assert_eq!(json[0].id, b);
    assert_eq!(json[0].tunnel_address, "100.64.0.3");
    assert_eq!(json[0].status, "active");

    let id = a.to_string();
    let out = sesame(
        &["devices", "revoke", &id, "--reason", "portable volé"],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("revoked"));
    let d = store.device(a).await.expect("q").expect("exists");
    assert_eq!(d.status, DeviceStatus::Revoked);
    assert_eq!(d.revoke_reason.as_deref(), Some("portable volé"));
    let audit = audit_of(&store, "device.revoked").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "cli:admin-dsi");
    assert_eq!(audit[0].target, format!("device:{a}"));

    // Again: already revoked is not an error; nothing new is audited.
    let out = sesame(&["devices", "revoke", &id], &config);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("already revoked"));
    // Unknown id: fails and says what to do.
    let out = sesame(&["devices", "revoke", "999"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("sesame devices list"),
        "{}",
        text(&out.stderr)
    );

    let out = sesame(&["devices", "list", "--format", "json"], &config);
    let json: Vec<sesame::api::DeviceSummary> =
        serde_json::from_slice(&out.stdout).expect("json list");
    assert_eq!(json[0].status, "revoked");
    assert!(json[0].revoked_at.is_some());
    assert_eq!(json[1].status, "active");
    assert_eq!(audit_of(&store, "device.revoked").await.len(), 1);
}
