//! `sesame gateway` in production shape: stock `wg show` through its API socket, metrics on
//! their own listener, SIGHUP re-reading the static peers without touching the live session,
//! a broken file refused. Needs root (CI runs as root).
#![allow(clippy::unwrap_used)]

mod common {
    pub mod metrics;
    pub mod netns;
    pub mod wg;
}

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::metrics;
use common::netns::{link, unique, wait_for, Netns};
use common::wg::{genkey, WgPeer};

const GW_PORT: u16 = 51820;

fn config(dir: &Path, tun: &str, peers: &[(&str, &str, &str)], extra: &str) -> String {
    let mut s = format!(
        "[gateway]\nlisten = \"0.0.0.0:{GW_PORT}\"\ninterface = \"{tun}\"\n\
         tunnel_network = \"100.64.0.0/24\"\nprivate_key_file = \"{}\"\nthreads = 1\n{extra}\n\
         [[resource]]\nname = \"paie\"\nallow = [\"198.18.10.10/32 icmp\"]\n",
        dir.join("gateway.key").display()
    );
    for (name, key, address) in peers {
        s.push_str(&format!(
            "\n[[peer]]\nname = \"{name}\"\npublic_key = \"{key}\"\naddress = \"{address}\"\nresources = [\"paie\"]\n"
        ));
    }
    s
}

/// `wg show TUN dump` peer lines: public key → latest handshake (seconds).
fn wg_peers(tun: &str) -> Vec<(String, u64)> {
    let out = Command::new("wg")
        .args(["show", tun, "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wg show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[4].parse().unwrap())
        })
        .collect()
}

fn metric(gw: &Netns, name: &str) -> f64 {
    let out = gw.exec("curl", &["-s", "-m", "5", "http://127.0.0.1:9108/metrics"]);
    let text = String::from_utf8(out.stdout).unwrap();
    metrics::value(&metrics::parse(&text), name, &[])
        .unwrap_or_else(|| panic!("{name} missing: {text}"))
}

#[test]
fn gateway_wg_show_metrics_and_reload_keep_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Netns::new("pgg");
    let laptop = Netns::new("pgl");
    link(&gw, "198.18.1.1/30", &laptop, "198.18.1.2/30");
    let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args([
            "keygen",
            "--out",
            dir.path().join("gateway.key").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let gateway_public = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let wg = WgPeer::start(&laptop, "100.64.0.10/32", dir.path());
    let tun = unique("pg");
    let cfg = dir.path().join("sesame.toml");
    let first = [("supervision", wg.key.public.as_str(), "100.64.0.10")];
    std::fs::write(&cfg, config(dir.path(), &tun, &first, "")).unwrap();
    let log = dir.path().join("gateway.log");
    let mut gateway = gw.spawn(
        env!("CARGO_BIN_EXE_sesame"),
        &["gateway", "--config", cfg.to_str().unwrap()],
        Some(&log),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let sock = format!("/var/run/wireguard/{tun}.sock");
    assert!(
        wait_for(Duration::from_secs(15), || Path::new(&sock).exists()),
        "no API socket; log:\n{}",
        log_text()
    );
    wg.set_peer(
        &laptop,
        &gateway_public,
        &format!("198.18.1.1:{GW_PORT}"),
        &["198.18.10.10/32"],
        1,
    );
    assert!(
        wait_for(Duration::from_secs(15), || wg_peers(&tun)
            .iter()
            .any(|(k, h)| *k == wg.key.public && *h > 0)),
        "no handshake in wg show; log:\n{}",
        log_text()
    );
    let handshake = wg_peers(&tun)[0].1;
    assert_eq!(metric(&gw, "sesame_gateway_peers"), 1.0);
    assert_eq!(metric(&gw, "sesame_gateway_peers_connected"), 1.0);
    assert!(metric(&gw, "sesame_gateway_handshakes_total") >= 1.0);

    // Reload: a second static peer appears; the laptop's session is the same one.
    let other = genkey();
    let both = [
        first[0],
        ("site-link", other.public.as_str(), "100.64.0.11"),
    ];
    std::fs::write(&cfg, config(dir.path(), &tun, &both, "")).unwrap();
    let pid = gateway.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert!(
        wait_for(Duration::from_secs(10), || wg_peers(&tun).len() == 2),
        "reload did not add the peer; log:\n{}",
        log_text()
    );
    let peers = wg_peers(&tun);
    let kept = peers.iter().find(|(k, _)| *k == wg.key.public).unwrap();
    assert_eq!(kept.1, handshake, "the laptop had to handshake again");
    assert_eq!(metric(&gw, "sesame_gateway_peers_connected"), 1.0);
    assert!(log_text().contains("configuration reloaded"));

    // A broken file: refused, logged with file, line and key; the peers stay.
    std::fs::write(&cfg, config(dir.path(), &tun, &both, "mtu = 99")).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert!(
        wait_for(Duration::from_secs(10), || log_text()
            .contains("reload refused")),
        "{}",
        log_text()
    );
    let line = log_text()
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("{}:7: key `gateway.mtu`", cfg.display())),
        "{line}"
    );
    assert_eq!(wg_peers(&tun).len(), 2);

    let st = gateway.signal_and_wait(libc::SIGTERM, Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "{}", log_text());
    assert!(!Path::new(&sock).exists(), "API socket left after shutdown");
}

#[test]
fn servers_refuse_secret_files_others_can_read_naming_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gateway.key");
    assert!(Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["keygen", "--out", key.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let password = dir.path().join("ldap.password");
    std::fs::write(&password, "service-secret\n").unwrap();
    let tls_key = dir.path().join("portal.key");
    std::fs::write(&tls_key, "not a real key\n").unwrap();
    let cfg = dir.path().join("sesame.toml");
    std::fs::write(
        &cfg,
        format!(
            "[portal]\ntls_cert_file = \"portal.pem\"\ntls_key_file = \"portal.key\"\n\
             [gateway]\nprivate_key_file = \"gateway.key\"\ninterface = \"{}\"\n\
             [directory]\nurl = \"ldap://127.0.0.1:1\"\nbind_dn = \"cn=s\"\n\
             bind_password_file = \"ldap.password\"\nuser_base = \"ou=p\"\ngroup_base = \"ou=g\"\n",
            unique("pz")
        ),
    )
    .unwrap();
    let start = |cmd: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
            .args([cmd, "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd} started");
        String::from_utf8_lossy(&out.stderr).to_string()
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
