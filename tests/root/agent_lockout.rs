//! The owner is never locked out by others: the real `sesame-agent` keeps the portal's signed
//! device cookie from its enrolment and shows it at the next one, so a known laptop re-enrols
//! while strangers hold its account's lock with wrong passwords; a laptop never seen is
//! refused. Real `sesame serve` and slapd in a namespace. Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::agent as agent_common;
use crate::require_root;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use agent_common::{agent_bin, toml_value};
use common::durability::{Backend, Crashable, PORTAL};
use common::slapd::password_of;

const USER: &str = "mdupont";

/// `sesame-agent enrol` (this thread's namespace, English messages), password on stdin.
fn agent_enrol(code: &str, dir: &Path) -> Output {
    let mut child = Command::new(agent_bin())
        .args(["enrol", "--portal", PORTAL, "--code", code, "--user", USER])
        .args(["--password-stdin", "--dir", dir.to_str().unwrap()])
        .env("LANG", "en_GB.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = format!("{}\n", password_of(USER));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A login from loopback address `source` (127.0.0.0/8 is all local in the namespace).
fn login_from(source: &str, password: &str) -> u16 {
    let body = serde_json::json!({"username": USER, "password": password}).to_string();
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "20"])
        .args([
            "--interface",
            source,
            "-H",
            "content-type: application/json",
        ])
        .args(["-d", &body, &format!("{PORTAL}/api/v1/login")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_known_laptop_re_enrols_while_strangers_keep_its_account_locked() {
    require_root!("a network namespace and a TUN device for sesame serve");
    let c = Crashable::start(Backend::Sqlite);
    let rows: Vec<(String, String)> = (1..=3)
        .map(|i| (USER.to_string(), format!("pc-{i}")))
        .collect();
    let codes = c.codes(&rows);
    let laptop = c.dir.path().join("laptop");
    let stranger = c.dir.path().join("stranger");

    let out = agent_enrol(&codes[0], &laptop);
    assert!(out.status.success(), "{}", text(&out));
    let state = std::fs::read_to_string(laptop.join("agent.toml")).unwrap();
    let cookie = toml_value(&state, "device_cookie");
    assert!(cookie.starts_with("sesame-device="), "{state}");
    let first_id = toml_value(&state, "device_id");

    // Wrong passwords from five addresses: the account (not any one source) is now refused,
    // even with its right password from an address never used.
    for n in 0..5 {
        assert_eq!(
            login_from(&format!("127.0.0.{}", 10 + n), "wrong-password"),
            401
        );
    }
    assert_eq!(login_from("127.0.0.99", password_of(USER)), 429);

    // A laptop never seen: refused, and its code is not spent.
    let out = agent_enrol(&codes[1], &stranger);
    assert!(!out.status.success());
    assert!(text(&out).contains("Too many attempts"), "{}", text(&out));
    assert!(!stranger.join("agent.toml").exists());

    // A forged cookie does not pass.
    let forged = std::fs::read_to_string(laptop.join("agent.toml"))
        .unwrap()
        .replace(
            &toml_value(&state, "device_cookie"),
            "sesame-device=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        );
    let forger = c.dir.path().join("forger");
    std::fs::create_dir(&forger).unwrap();
    std::fs::write(forger.join("agent.toml"), forged).unwrap();
    for (path, mode) in [(forger.clone(), 0o700), (forger.join("agent.toml"), 0o600)] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let out = agent_enrol(&codes[2], &forger);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Too many attempts"), "{}", text(&out));

    // The known laptop (same directory, its device cookie): enrols again, with that code
    // (its success clears the account's minute of refusals: the owner is in).
    let out = agent_enrol(&codes[1], &laptop);
    assert!(out.status.success(), "known laptop refused: {}", text(&out));
    let state = std::fs::read_to_string(laptop.join("agent.toml")).unwrap();
    assert_ne!(toml_value(&state, "device_id"), first_id, "a new device");
    assert!(toml_value(&state, "device_cookie").starts_with("sesame-device="));
}
