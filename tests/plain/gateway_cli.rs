//! `sesame keygen`, and what `sesame gateway` and `sesame serve` refuse before starting (a
//! missing section, key or secret files others can read), through the real binary.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::Command;

use crate::common::cli::{self, text};
use crate::common::config::TestConfig;

fn sesame(args: &[&str]) -> std::process::Output {
    cli::sesame(args).output()
}

#[test]
fn keygen_writes_0600_and_prints_the_public_key_wg_agrees_with() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gateway.key");
    let out = sesame(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    // `wg pubkey` derives the same public key from the file: same format as `wg genkey`.
    let wg = Command::new("sh")
        .arg("-c")
        .arg(format!("wg pubkey < {}", key.display()))
        .output()
        .unwrap();
    assert!(wg.status.success());
    assert_eq!(String::from_utf8(wg.stdout).unwrap().trim(), public);
    // Never overwrites.
    let again = sesame(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success());
}

#[test]
fn gateway_refuses_missing_or_readable_key_naming_file_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gw.key");
    let config = TestConfig::new()
        .gateway(&format!(
            "listen = \"127.0.0.1:0\"\ninterface = \"sgcli0\"\nprivate_key_file = \"{}\"",
            key.display()
        ))
        .write(&dir.path().join("sesame.toml"));
    let out = sesame(&["gateway", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert!(err.contains("sesame keygen --out"), "{err}");

    assert!(sesame(&["keygen", "--out", key.to_str().unwrap()])
        .status
        .success());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = sesame(&["gateway", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_config_without_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new()
        .gateway("private_key_file = \"gw.key\"")
        .write(&dir.path().join("sesame.toml"));
    let out = cli::sesame(&["serve"]).config(&config).output();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("[directory] section is missing"), "{err}");
    assert!(err.contains(config.to_str().unwrap()), "{err}");
}

#[test]
fn servers_refuse_secret_files_others_can_read_naming_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gateway.key");
    cli::sesame(&["keygen", "--out", key.to_str().unwrap()]).ok();
    let password = dir.path().join("ldap.password");
    std::fs::write(&password, "service-secret\n").unwrap();
    let tls_key = dir.path().join("portal.key");
    std::fs::write(&tls_key, "not a real key\n").unwrap();
    let cfg = TestConfig::new()
        .portal("tls_cert_file = \"portal.pem\"\ntls_key_file = \"portal.key\"")
        .gateway("private_key_file = \"gateway.key\"\ninterface = \"sgcli1\"")
        .table(
            "directory",
            "url = \"ldap://127.0.0.1:1\"\nbind_dn = \"cn=s\"\nbind_password_file = \"ldap.password\"\n\
             user_base = \"ou=p\"\ngroup_base = \"ou=g\"",
        )
        .write(&dir.path().join("sesame.toml"));
    let start = |cmd: &str| {
        let out = cli::sesame(&[cmd]).config(&cfg).output();
        assert!(!out.status.success(), "{cmd} started");
        text(&out.stderr)
    };
    for (file, what) in [
        (&tls_key, "portal.tls_key_file"),
        (&password, "directory.bind_password_file"),
    ] {
        std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = start("serve");
        assert!(
            err.contains(&format!("chmod 600 {}", file.display())),
            "{err}"
        );
        assert!(err.contains(what), "{err}");
    }
    // The gateway alone checks its own key the same way.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
    let err = start("gateway");
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
}

#[test]
fn a_site_gateway_refuses_the_portals_sections_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = TestConfig::new().gateway(
        "private_key_file = \"gw.key\"\nportals = [\"https://portal.example.org\"]\n\
         portal_token_file = \"site.token\"",
    );
    for (extra, key) in [
        (
            base.clone().table("database", "url = \"sqlite:///x.db\""),
            "database",
        ),
        (
            base.clone()
                .table("audit", "signing_key_file = \"audit.key\""),
            "audit.signing_key_file",
        ),
    ] {
        let path = extra.write(&dir.path().join("site.toml"));
        let line = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .position(|l| l.starts_with(key.split('.').next_back().unwrap()) || l == "[database]")
            .unwrap()
            + 1;
        let out = sesame(&[
            "gateway",
            "--config",
            path.to_str().unwrap(),
            "--site",
            "dsden56",
        ]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("site.toml:{line}: key `{key}`")) && err.contains("site gateway"),
            "{err}"
        );
    }
}
