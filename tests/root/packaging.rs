//! The Debian packages as an operator gets them: built with cargo-deb (from the test build's
//! binaries), installed with dpkg, owners and modes of every file, every unit verified and
//! rated by `systemd-analyze security`, the installed binary run as each unit would run it
//! (its user, umask and capabilities, with `setpriv`: systemd is not PID 1 here) — the portal
//! cannot open a TUN, the gateway cannot read the portal's database or audit key, the portal
//! cannot read the gateway's key — then purged with nothing left, users included. Needs root,
//! dpkg, systemd-analyze, setpriv and cargo-deb (`packaging/install-deps.sh test`).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common::agent as agent_common;
use crate::common::config::TestConfig;
use crate::common::netns::unique;
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

/// The `getent passwd` line of a system user the package creates: checked, then its fields.
fn system_user(name: &str, home: &str) -> Vec<String> {
    let out = run(Command::new("getent").args(["passwd", name]));
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.trim().ends_with(&format!(":{home}:/usr/sbin/nologin")),
        "{line}"
    );
    let f: Vec<String> = line.trim().split(':').map(String::from).collect();
    assert!(
        f[2].parse::<u32>().unwrap() < 1000,
        "{name} must be a system user: {line}"
    );
    f
}

/// The name of a user or group id (`getent passwd|group ID`), or the id when it has none.
fn name_of(db: &str, id: u32) -> String {
    Command::new("getent")
        .args([db, &id.to_string()])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let line = String::from_utf8_lossy(&o.stdout).to_string();
            line.split(':').next().map(String::from)
        })
        .unwrap_or_else(|| id.to_string())
}

/// (owner, group, mode) of a path, by name.
fn stat(path: &str) -> (String, String, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (
        name_of("passwd", m.uid()),
        name_of("group", m.gid()),
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
            "/usr/lib/systemd/system/sesame-portal.service",
            ("root", "root", 0o644),
        );
        m.insert(
            "/usr/lib/systemd/system/sesame-gateway.service",
            ("root", "root", 0o644),
        );
        m.insert("/etc/sesame-gateway", ("root", "sesame-gateway", 0o750));
        m.insert(
            "/etc/sesame-gateway/gateway.toml",
            ("root", "sesame-gateway", 0o640),
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

fn check_installed_files(package: &str) {
    let out = run(Command::new("dpkg").args(["-L", package]));
    let listed = String::from_utf8(out.stdout).unwrap();
    let want = expected(package);
    for path in listed.lines().filter(|l| l.starts_with('/') && *l != "/.") {
        let got = stat(path);
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

/// The settings of an installed unit, in order (`Key`, `value`), comments left out.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    let path = format!("/usr/lib/systemd/system/{unit}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Every value of `key` in `settings`, in order.
fn values<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The capabilities a unit setting names, as setpriv writes them (`+net_admin`).
fn caps(settings: &[(String, String)], key: &str) -> Vec<String> {
    values(settings, key)
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect()
}

/// The command line running `program args` as `unit` would: its `User=` and `Group=` (with the
/// user's own groups, as systemd sets them, and its `SupplementaryGroups=`), its `UMask=`, its
/// `AmbientCapabilities=` and nothing else inherited, its `CapabilityBoundingSet=`, no new
/// privileges. Read from the installed unit, so a unit that grants more shows here.
fn unit_argv(unit: &str, program: &str, args: &[&str]) -> Vec<String> {
    let s = unit_settings(unit);
    let user = *values(&s, "User").last().expect("the unit names its User=");
    let group = values(&s, "Group").last().copied().unwrap_or(user);
    assert!(
        !values(&s, "CapabilityBoundingSet").is_empty(),
        "{unit}: no CapabilityBoundingSet= (every capability)"
    );
    let set = |extra: Vec<String>| {
        std::iter::once("-all".to_string())
            .chain(extra)
            .collect::<Vec<_>>()
            .join(",")
    };
    let ambient = set(caps(&s, "AmbientCapabilities"));
    let umask = values(&s, "UMask").last().copied().unwrap_or("0022");
    // The user's own groups, and the unit's SupplementaryGroups=.
    let own = run(Command::new("id").args(["-nG", user]));
    let mut groups: Vec<String> = String::from_utf8_lossy(&own.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    for v in values(&s, "SupplementaryGroups") {
        groups.extend(v.split_whitespace().map(String::from));
    }
    let mut argv: Vec<String> = ["setpriv", "--reuid", user, "--regid", group, "--groups"]
        .map(String::from)
        .to_vec();
    argv.push(groups.join(","));
    argv.push(format!("--inh-caps={ambient}"));
    argv.push(format!("--ambient-caps={ambient}"));
    argv.push(format!(
        "--bounding-set={}",
        set(caps(&s, "CapabilityBoundingSet"))
    ));
    for a in [
        "--no-new-privs",
        "--",
        "/bin/sh",
        "-c",
        r#"umask "$0" && exec "$@""#,
        umask,
        program,
    ]
    .into_iter()
    .chain(args.iter().copied())
    {
        argv.push(a.to_string());
    }
    argv
}

/// Runs `program args` as `unit` would ([`unit_argv`]).
fn as_unit(unit: &str, program: &str, args: &[&str]) -> Output {
    let argv = unit_argv(unit, program, args);
    Command::new(&argv[0]).args(&argv[1..]).output().unwrap()
}

/// `sesame gateway --config CONFIG` as `unit` would run it, for 5 s at most, as on a Debian
/// server: in a private mount namespace where /dev/net/tun is 0666 (udev's mode; this
/// machine's is 0600, which would refuse it whatever the capabilities), and in a network
/// namespace of its own (a TUN it does open is gone with it).
fn gateway_as(unit: &str, config: &Path, dev: &Path) -> Output {
    let argv = unit_argv(
        unit,
        "timeout",
        &[
            "5",
            "/usr/bin/sesame",
            "gateway",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    std::fs::create_dir_all(dev).unwrap();
    Command::new("unshare")
        .args([
            "--mount",
            "--net",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
        ])
        .arg(
            r#"mount -t tmpfs none "$DEV" && mknod -m 0666 "$DEV/tun" c 10 200 \
               && mount --bind "$DEV/tun" /dev/net/tun && ip link set lo up && exec "$@""#,
        )
        .arg("sh")
        .args(&argv)
        .env("DEV", dev)
        .output()
        .unwrap()
}

/// Runs the installed `sesame` as `unit` would.
fn sesame_as(unit: &str, args: &[&str]) -> Output {
    as_unit(unit, "/usr/bin/sesame", args)
}

/// Runs each `ExecStartPre=` of `unit` as the unit would; each must succeed.
fn exec_start_pre(unit: &str) {
    for line in values(&unit_settings(unit), "ExecStartPre") {
        let words: Vec<&str> = line.split_whitespace().collect();
        let out = as_unit(unit, words[0], &words[1..]);
        assert!(
            out.status.success(),
            "{unit}: ExecStartPre={line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `cat FILE` as `unit` would: refused with EACCES.
fn unreadable_by(unit: &str, file: &str) {
    let out = as_unit(unit, "cat", &[file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Permission denied"),
        "{unit} must not read {file}: exit {:?}, {} bytes read, {err}",
        out.status.code(),
        out.stdout.len()
    );
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
    for user in ["sesame", "sesame-gateway"] {
        assert!(
            !user_exists(user),
            "a `{user}` user exists without the package: this machine is not a test machine"
        );
    }

    step(
        "dpkg installs both: two system users, files owned and moded as they must be",
        || {
            let out = dpkg(&["-i", server.to_str().unwrap(), agent.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "dpkg -i: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let sesame = system_user("sesame", "/var/lib/sesame");
            let gateway = system_user("sesame-gateway", "/var/lib/sesame-gateway");
            assert_ne!(sesame[2], gateway[2], "two users");
            // The gateway's user is in its own group alone: not in sesame's.
            let groups = run(Command::new("id").args(["-nG", "sesame-gateway"]));
            assert_eq!(
                String::from_utf8_lossy(&groups.stdout).trim(),
                "sesame-gateway"
            );

            check_installed_files("sesame");
            check_installed_files("sesame-agent");
            assert_eq!(
                stat("/var/lib/sesame"),
                ("sesame".into(), "sesame".into(), 0o750),
                "state directory"
            );
            assert_eq!(
                stat("/var/lib/sesame-gateway"),
                ("sesame-gateway".into(), "sesame-gateway".into(), 0o750),
                "the gateway's state directory"
            );
            let conffiles = String::from_utf8(
                run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "sesame"])).stdout,
            )
            .unwrap();
            for file in [
                "/etc/sesame/sesame.toml",
                "/etc/sesame-gateway/gateway.toml",
            ] {
                assert!(
                    conffiles.contains(file),
                    "{file} not a conffile: {conffiles}"
                );
            }
        },
    );

    step(
        "the three server units and the agent's are valid and hardened",
        || {
            for unit in [
                "sesame.service",
                "sesame-portal.service",
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

            // The portal: sesame's user, no capability at all, no device, no netlink.
            let portal = unit_settings("sesame-portal.service");
            assert_eq!(
                values(&portal, "ExecStart"),
                ["/usr/bin/sesame portal --config /etc/sesame/sesame.toml"]
            );
            assert_eq!(values(&portal, "User"), ["sesame"]);
            assert_eq!(values(&portal, "CapabilityBoundingSet"), [""]);
            assert!(values(&portal, "AmbientCapabilities").is_empty());
            assert_eq!(values(&portal, "PrivateDevices"), ["yes"]);
            assert!(values(&portal, "DeviceAllow").is_empty());
            assert!(
                values(&portal, "RestrictAddressFamilies")
                    .iter()
                    .all(|v| !v.contains("AF_NETLINK")),
                "the portal configures no interface: no netlink"
            );
            assert!(values(&portal, "Conflicts").contains(&"sesame.service"));

            // The gateway: its own user, state and configuration; the portal's out of sight.
            let gateway = unit_settings("sesame-gateway.service");
            assert_eq!(
                values(&gateway, "ExecStart"),
                ["/usr/bin/sesame gateway --config /etc/sesame-gateway/gateway.toml"]
            );
            assert_eq!(values(&gateway, "User"), ["sesame-gateway"]);
            assert_eq!(values(&gateway, "CapabilityBoundingSet"), ["CAP_NET_ADMIN"]);
            assert_eq!(values(&gateway, "StateDirectory"), ["sesame-gateway"]);
            let hidden = values(&gateway, "InaccessiblePaths").join(" ");
            for path in ["/var/lib/sesame", "/etc/sesame"] {
                assert!(
                    hidden
                        .split_whitespace()
                        .any(|p| p.trim_start_matches('-') == path),
                    "sesame-gateway.service: InaccessiblePaths lacks {path}: {hidden:?}"
                );
            }
        },
    );

    step("the installed binary, as sesame.service runs it: version, the shipped config, first-start keygen", || {
        let out = run(Command::new("/usr/bin/sesame").arg("--version"));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("sesame "));
        let out = sesame_as(
            "sesame.service",
            &["check-config", "--config", "/etc/sesame/sesame.toml"],
        );
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
        let first = sesame_as("sesame.service", &keygen);
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert_eq!(
            stat("/var/lib/sesame/gateway.key"),
            ("sesame".into(), "sesame".into(), 0o600)
        );
        let again = sesame_as("sesame.service", &keygen);
        assert!(again.status.success());
        assert_eq!(first.stdout, again.stdout, "an existing key is kept");
        let out = run(Command::new("/usr/bin/sesame-agent").arg("--version"));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("sesame-agent "));
        // The harness grants what a unit grants: sesame.service's CAP_NET_ADMIN is there.
        let out = as_unit("sesame.service", "grep", &["CapEff", "/proc/self/status"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().ends_with("0000000000001000"),
            "sesame.service's capabilities under setpriv: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    });

    step(
        "the portal's and the gateway's first start (ExecStartPre), each as its unit runs it",
        || {
            exec_start_pre("sesame-portal.service");
            exec_start_pre("sesame-gateway.service");
            assert_eq!(
                stat("/var/lib/sesame-gateway/gateway.key"),
                ("sesame-gateway".into(), "sesame-gateway".into(), 0o600),
                "the gateway's key, created by its own user"
            );
        },
    );

    step(
        "as sesame-portal.service runs it, `sesame gateway` cannot open a TUN: no capability",
        || {
            let out = as_unit(
                "sesame-portal.service",
                "grep",
                &["Cap", "/proc/self/status"],
            );
            let status = String::from_utf8_lossy(&out.stdout).to_string();
            for line in status.lines() {
                assert!(
                    line.ends_with("0000000000000000"),
                    "the portal holds a capability: {status}"
                );
            }
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().to_str().unwrap();
            run(Command::new("chown").args(["sesame:sesame", d]));
            let tun = unique("pkg");
            let config = TestConfig::new()
            .gateway(&format!(
                "listen = \"127.0.0.1:0\"\ninterface = \"{tun}\"\ntunnel_network = \"100.64.0.0/24\"\n\
                 private_key_file = \"{d}/gateway.key\"\nthreads = 1"
            ))
            .table("metrics", "listen = \"127.0.0.1:0\"")
            .write(&dir.path().join("gateway.toml"));
            let key = sesame_as(
                "sesame-portal.service",
                &["keygen", "--out", &format!("{d}/gateway.key")],
            );
            assert!(
                key.status.success(),
                "{}",
                String::from_utf8_lossy(&key.stderr)
            );
            let dev = dir.path().join("dev");
            let out = gateway_as("sesame-portal.service", &config, &dev);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success()
                    && err.contains(&format!(
                        "cannot create TUN device {tun}: Operation not permitted"
                    )),
                "the portal's privileges must not open a TUN: exit {:?}\n{err}",
                out.status.code()
            );
            assert!(
                err.contains("CAP_NET_ADMIN"),
                "the error says what is missing: {err}"
            );
            // The same user with sesame.service's CAP_NET_ADMIN opens it (and runs until
            // stopped): the refusal above is the capability's, not the device node's or the
            // harness's.
            let out = gateway_as("sesame.service", &config, &dev);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.code() == Some(124) && !err.contains("cannot create TUN device"),
                "sesame.service's privileges open the TUN: exit {:?}\n{err}",
                out.status.code()
            );
        },
    );

    step("the gateway's user cannot read the portal's database, audit key or configuration; nor the portal the gateway's key", || {
        // Created as the portal creates them: by sesame-portal.service's user and umask.
        let audit = "/var/lib/sesame/audit.key";
        let out = sesame_as("sesame-portal.service", &["keygen", "--audit", "--out", audit]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = sesame_as(
            "sesame-portal.service",
            &["devices", "list", "--config", "/etc/sesame/sesame.toml"],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let db = "/var/lib/sesame/sesame.db";
        for file in [audit, db] {
            assert_eq!(stat(file), ("sesame".into(), "sesame".into(), 0o600), "{file}");
        }
        for file in [db, audit, "/etc/sesame/sesame.toml"] {
            // The portal reads them: the refusal below is the gateway's user's, not the harness's.
            let ok = as_unit("sesame-portal.service", "cat", &[file]);
            assert!(ok.status.success(), "{file}: {}", String::from_utf8_lossy(&ok.stderr));
            unreadable_by("sesame-gateway.service", file);
        }
        let key = "/var/lib/sesame-gateway/gateway.key";
        let ok = as_unit("sesame-gateway.service", "cat", &[key]);
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        unreadable_by("sesame-portal.service", key);
    });

    step("purge: nothing left, users included", || {
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
            "/etc/sesame-gateway",
            "/var/lib/sesame-gateway",
            "/usr/lib/systemd/system/sesame.service",
            "/usr/lib/systemd/system/sesame-portal.service",
            "/usr/lib/systemd/system/sesame-gateway.service",
            "/usr/lib/systemd/system/sesame-agent.service",
            "/usr/share/doc/sesame",
            "/usr/share/doc/sesame-agent",
        ] {
            assert!(!Path::new(path).exists(), "{path} left after purge");
        }
        for user in ["sesame", "sesame-gateway"] {
            assert!(!user_exists(user), "user {user} left after purge");
            let group = Command::new("getent")
                .args(["group", user])
                .output()
                .unwrap();
            assert!(!group.status.success(), "group {user} left after purge");
        }
        assert!(!is_installed("sesame") && !is_installed("sesame-agent"));
    });
}
