//! The Debian packages as an operator gets them: built with cargo-deb (from the test build's
//! binaries), installed with dpkg, owners and modes of every file, both units verified and
//! rated by `systemd-analyze security`, the installed binary run as the `sesame` user, then
//! purged with nothing left. Needs root, dpkg, systemd-analyze and cargo-deb
//! (`packaging/install-deps.sh test`).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common::agent as agent_common;
use crate::common::steps::step;
use crate::require_root;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The highest `systemd-analyze security` exposure accepted for the server units.
const MAX_EXPOSURE: f64 = 2.0;

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory the test binaries were built in (cargo-deb packs from it).
fn target_dir() -> PathBuf {
    // The sesame binary under test is TARGET/debug/sesame.
    Path::new(crate::common::cli::BIN)
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

/// `cargo deb` on the debug binaries already built (a release build takes too long here).
fn build_deb(package: &str, out_dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_deb,
        "cargo-deb is missing: run `packaging/install-deps.sh test` (it installs cargo-deb)"
    );
    if package == "sesame-agent" {
        // Not a dependency of this test target: built (if stale) beside the test's binaries.
        agent_common::agent_bin();
    }
    let out = run(Command::new(&cargo)
        .args([
            "deb",
            "-p",
            package,
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "-q",
        ])
        .args(["-o", out_dir.to_str().unwrap()])
        .env("CARGO_TARGET_DIR", target_dir())
        .current_dir(workspace()));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = PathBuf::from(path.lines().last().unwrap_or_default());
    assert!(path.exists(), "cargo deb wrote no package: {path:?}");
    path
}

/// dpkg, retried while another dpkg/apt holds the lock (shared test machine).
fn dpkg(args: &[&str]) -> Output {
    for _ in 0..60 {
        let out = Command::new("dpkg").args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("lock") {
            return out;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    panic!("dpkg lock held for 2 minutes");
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn uid_gid(name: &str) -> (u32, u32) {
    let out = run(Command::new("getent").args(["passwd", name]));
    let line = String::from_utf8(out.stdout).unwrap();
    let f: Vec<&str> = line.trim().split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// (owner, group, mode) of a path, with names for the two users that matter here.
fn stat(path: &str, sesame: (u32, u32)) -> (String, String, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |id: u32, sesame_id: u32| match id {
        0 => "root".to_string(),
        i if i == sesame_id => "sesame".to_string(),
        i => i.to_string(),
    };
    (
        name(m.uid(), sesame.0),
        name(m.gid(), sesame.1),
        m.mode() & 0o7777,
    )
}

/// The files each package installs, with their expected owner, group and mode. Directories
/// not listed must be root:root 0755.
fn expected(package: &str) -> BTreeMap<&'static str, (&'static str, &'static str, u32)> {
    let mut m = BTreeMap::new();
    if package == "sesame" {
        m.insert("/usr/bin/sesame", ("root", "root", 0o755));
        m.insert("/etc/sesame", ("root", "sesame", 0o750));
        m.insert("/etc/sesame/sesame.toml", ("root", "sesame", 0o640));
        m.insert(
            "/usr/lib/systemd/system/sesame.service",
            ("root", "root", 0o644),
        );
        m.insert(
            "/usr/lib/systemd/system/sesame-gateway.service",
            ("root", "root", 0o644),
        );
        m.insert("/usr/share/doc/sesame/README.md", ("root", "root", 0o644));
        m.insert("/usr/share/doc/sesame/install.md", ("root", "root", 0o644));
        m.insert("/usr/share/doc/sesame/copyright", ("root", "root", 0o644));
    } else {
        m.insert("/usr/bin/sesame-agent", ("root", "root", 0o755));
        m.insert(
            "/usr/lib/systemd/system/sesame-agent.service",
            ("root", "root", 0o644),
        );
        m.insert(
            "/usr/share/doc/sesame-agent/README.md",
            ("root", "root", 0o644),
        );
        m.insert(
            "/usr/share/doc/sesame-agent/copyright",
            ("root", "root", 0o644),
        );
    }
    m
}

fn check_installed_files(package: &str, sesame: (u32, u32)) {
    let out = run(Command::new("dpkg").args(["-L", package]));
    let listed = String::from_utf8(out.stdout).unwrap();
    let want = expected(package);
    for path in listed.lines().filter(|l| l.starts_with('/') && *l != "/.") {
        let got = stat(path, sesame);
        let is_dir = Path::new(path).is_dir();
        match want.get(path) {
            Some(&(o, g, mode)) => assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2),
                (o, g, mode),
                "{path}: owner, group, mode"
            ),
            None if is_dir => assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2),
                ("root", "root", 0o755),
                "{path}: a directory the package creates"
            ),
            None => panic!("{path}: installed by {package} but not expected by this test"),
        }
    }
    for path in want.keys() {
        assert!(listed.lines().any(|l| l == *path), "{path} not installed");
    }
}

/// `systemd-analyze security` exposure of an installed unit (e.g. 1.7).
fn exposure(unit: &str) -> f64 {
    let out = run(Command::new("systemd-analyze").args([
        "security",
        "--offline=yes",
        &format!("/usr/lib/systemd/system/{unit}"),
    ]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line: {text}"));
    line.split(": ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"))
}

/// Runs the installed binary as the `sesame` user (as the unit does).
fn as_sesame(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            "sesame",
            "--regid",
            "sesame",
            "--init-groups",
            "--",
        ])
        .arg("/usr/bin/sesame")
        .args(args)
        .output()
        .unwrap()
}

fn purge_if_installed() {
    for p in ["sesame-agent", "sesame"] {
        if is_installed(p) || Path::new(&format!("/var/lib/dpkg/info/{p}.list")).exists() {
            dpkg(&["--purge", p]);
        }
    }
}

#[test]
fn debs_install_with_least_privilege_verify_and_purge_clean() {
    require_root!("dpkg, a system user, systemd units");
    let work = tempfile::tempdir().unwrap();
    let (server, agent) = step("cargo deb builds both packages from the test build", || {
        (
            build_deb("sesame", work.path()),
            build_deb("sesame-agent", work.path()),
        )
    });
    // A run that died half-way leaves a package behind: start clean.
    purge_if_installed();
    assert!(
        !user_exists("sesame"),
        "a `sesame` user exists without the package: this machine is not a test machine"
    );

    let ids = step(
        "dpkg installs both: a system user, files owned and moded as they must be",
        || {
            let out = dpkg(&["-i", server.to_str().unwrap(), agent.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "dpkg -i: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ids = uid_gid("sesame");
            let passwd =
                String::from_utf8(run(Command::new("getent").args(["passwd", "sesame"])).stdout)
                    .unwrap();
            assert!(
                passwd
                    .trim()
                    .ends_with(":/var/lib/sesame:/usr/sbin/nologin"),
                "{passwd}"
            );
            assert!(ids.0 < 1000, "sesame must be a system user: {passwd}");

            check_installed_files("sesame", ids);
            check_installed_files("sesame-agent", ids);
            assert_eq!(
                stat("/var/lib/sesame", ids),
                ("sesame".into(), "sesame".into(), 0o750),
                "state directory"
            );
            let conffiles = String::from_utf8(
                run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "sesame"])).stdout,
            )
            .unwrap();
            assert!(conffiles.contains("/etc/sesame/sesame.toml"), "{conffiles}");
            ids
        },
    );

    step(
        "both server units and the agent's are valid and hardened",
        || {
            for unit in [
                "sesame.service",
                "sesame-gateway.service",
                "sesame-agent.service",
            ] {
                let out = Command::new("systemd-analyze")
                    .args(["verify", &format!("/usr/lib/systemd/system/{unit}")])
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                let ours: Vec<&str> = err.lines().filter(|l| l.contains("sesame")).collect();
                assert!(
                    out.status.success() && ours.is_empty(),
                    "systemd-analyze verify {unit}: {err}"
                );
                let score = exposure(unit);
                eprintln!("systemd-analyze security {unit}: exposure {score}");
                assert!(
                    score <= MAX_EXPOSURE,
                    "{unit}: exposure {score} > {MAX_EXPOSURE}"
                );
            }
            let unit = std::fs::read_to_string("/usr/lib/systemd/system/sesame.service").unwrap();
            for line in [
                "User=sesame",
                "AmbientCapabilities=CAP_NET_ADMIN\n",
                "CapabilityBoundingSet=CAP_NET_ADMIN\n",
                "ExecReload=/bin/kill -HUP $MAINPID",
            ] {
                assert!(unit.contains(line), "sesame.service lacks {line:?}");
            }
        },
    );

    step("the installed binary, as the service user: version, the shipped config, first-start keygen", || {
        let out = run(Command::new("/usr/bin/sesame").arg("--version"));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("sesame "));
        let out = as_sesame(&["check-config", "--config", "/etc/sesame/sesame.toml"]);
        assert!(
            out.status.success(),
            "check-config on the installed config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let keygen = [
            "keygen",
            "--if-missing",
            "--out",
            "/var/lib/sesame/gateway.key",
        ];
        let first = as_sesame(&keygen);
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert_eq!(
            stat("/var/lib/sesame/gateway.key", ids),
            ("sesame".into(), "sesame".into(), 0o600)
        );
        let again = as_sesame(&keygen);
        assert!(again.status.success());
        assert_eq!(first.stdout, again.stdout, "an existing key is kept");
        let out = run(Command::new("/usr/bin/sesame-agent").arg("--version"));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("sesame-agent "));
    });

    step("purge: nothing left, user included", || {
        let out = dpkg(&["--purge", "sesame-agent", "sesame"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for path in [
            "/usr/bin/sesame",
            "/usr/bin/sesame-agent",
            "/etc/sesame",
            "/var/lib/sesame",
            "/usr/lib/systemd/system/sesame.service",
            "/usr/lib/systemd/system/sesame-gateway.service",
            "/usr/lib/systemd/system/sesame-agent.service",
            "/usr/share/doc/sesame",
            "/usr/share/doc/sesame-agent",
        ] {
            assert!(!Path::new(path).exists(), "{path} left after purge");
        }
        assert!(!user_exists("sesame"), "user sesame left after purge");
        assert!(!is_installed("sesame") && !is_installed("sesame-agent"));
    });
}
