//! `sesame keygen` and the key checks of `sesame gateway`, through the real binary.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::Command;

fn sesame(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(args)
        .output()
        .unwrap()
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
    let config = dir.path().join("sesame.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ninterface = \"sgcli0\"\nprivate_key_file = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
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
