//! Production shape of `sesame serve`: run as an unprivileged user holding only CAP_NET_ADMIN
//! (setpriv, as the systemd unit does), JSON logs; a laptop enrols and reaches payroll; stock
//! `wg show` reads the gateway through its API socket (and `wg set` is refused); metrics move;
//! SIGHUP grants a new resource with no ping lost, a broken file changes nothing; the logs of
//! every server hold no secret. Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::require_root;

use std::fs::File;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cli;
use common::config::TestConfig;
use common::metrics;
use common::netns::{unique, wait_for, Proc, ThreadNetns};
use common::serve::audit_events;
use common::slapd::{password_of, Slapd};
use common::steps::step;
use common::traffic::SteadyPing;
use common::wg::WgPeer;
use common::world::{app_servers, Topology, APP_PORT, GW_PORT, PAIE, RH};
use serde_json::{json, Value};

const PORTAL: &str = "http://127.0.0.1:8080";
const METRICS: &str = "http://127.0.0.1:9108/metrics";
/// The unprivileged account the server runs as (what the package's `sesame` user stands for).
const UID: u32 = 65534;
const PAIE_GROUP: &str = "cn=gestionnaires-paie,ou=groups,dc=academie,dc=test";

/// One portal call from this thread's namespace: (status, JSON body or Null).
fn api(method: &str, path: &str, body: Option<&Value>, jar: Option<&Path>) -> (u16, Value) {
    common::curl::api(&format!("{PORTAL}{path}"), method, body, jar, None)
}

/// A metrics scrape, parsed by a Prometheus text-format parser.
fn scrape() -> metrics::Scrape {
    metrics::scrape(METRICS)
}

/// The value of a sample (counter, gauge or untyped) with these labels; 0 when absent.
fn sample(s: &metrics::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics::value(s, name, labels).unwrap_or(0.0)
}

fn chown(path: &Path, mode: u32) {
    std::os::unix::fs::chown(path, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The server's config; with `rh_granted` (the reload), RH becomes a resource granted to
/// payroll and logs go debug.
fn config_text(dir: &Path, tun: &str, directory: &str, rh_granted: bool) -> String {
    let mut c = TestConfig::new()
        .portal(&format!("listen = \"127.0.0.1:8080\"\npublic_url = \"{PORTAL}\""))
        .gateway(&format!(
            "listen = \"0.0.0.0:{GW_PORT}\"\nendpoint = \"198.18.1.1:{GW_PORT}\"\ninterface = \"{tun}\"\n\
             tunnel_network = \"100.64.0.0/24\"\nprivate_key_file = \"{}\"\nthreads = 1",
            dir.join("gateway.key").display()
        ))
        .sqlite(&dir.join("sesame.db"))
        .sections(directory)
        .sections(
            r#"[roles]
vpn_users = ["cn=personnels-administratifs,ou=groups,dc=academie,dc=test"]
it_staff = ["cn=dsi,ou=groups,dc=academie,dc=test"]"#,
        )
        .table("log", "format = \"json\"");
    if rh_granted {
        c = c.table("log", "level = \"debug\"").sections(&format!(
            "[[resource]]\nname = \"rh\"\nallow = [\"{RH}/32 tcp:{APP_PORT}\", \"{RH}/32 icmp\"]\n\n\
             [[grant]]\ngroup = \"{PAIE_GROUP}\"\nresources = [\"rh\"]"
        ));
    }
    c.sections(&format!(
        r#"[[resource]]
name = "paie"
allow = ["{PAIE}/32 tcp:{APP_PORT}", "{PAIE}/32 icmp"]

[[grant]]
group = "{PAIE_GROUP}"
resources = ["paie"]"#
    ))
    .text()
}

#[test]
fn unprivileged_serve_wg_show_metrics_reload_and_no_secret_in_logs() {
    require_root!("network namespaces, TUN, setpriv to an unprivileged user");
    let tmp = tempfile::tempdir().unwrap();
    // The server's user may cross the test's folder but owns only `state` and `run`.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let state = tmp.path().join("state");
    let rundir = tmp.path().join("run");
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(&rundir).unwrap();
    chown(&state, 0o750);
    chown(&rundir, 0o755);

    let net = Topology::new("sp", 1);
    let (gw, laptop) = (&net.gw, &net.laptops[0]);
    let _listener = app_servers(&net, tmp.path());
    let res_log = tmp.path().join("res-listener.log");

    let _in_gw = ThreadNetns::enter(gw);
    let slapd = Slapd::start();
    // The service account's password, in a file only the server's user reads.
    let service_password = std::fs::read_to_string(slapd.password_file()).unwrap();
    let pw_file = state.join("ldap.password");
    std::fs::write(&pw_file, &service_password).unwrap();
    chown(&pw_file, 0o600);
    let directory = slapd
        .directory_toml()
        .replace(
            &slapd.password_file().display().to_string(),
            &pw_file.display().to_string(),
        )
        .replace("sync_interval = \"60s\"", "sync_interval = \"2s\"");
    assert!(directory.contains(pw_file.to_str().unwrap()));

    let tun = unique("sp");
    let config = state.join("sesame.toml");
    std::fs::write(&config, config_text(&state, &tun, &directory, false)).unwrap();
    chown(&config, 0o640);

    let setpriv = [
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--no-new-privs",
    ];
    let sesame = cli::BIN;
    let log = tmp.path().join("serve.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let sock = rundir.join(format!("{tun}.sock"));
    let tleroux = password_of("tleroux");
    let mdupont = password_of("mdupont");

    let (gateway_public, gateway_private) = step(
        "as the unit's ExecStartPre: the key is created by the server's user, 0600",
        || {
            let key_path = state.join("gateway.key");
            let out = Command::new(setpriv[0])
                .args(&setpriv[1..])
                .args([
                    sesame,
                    "keygen",
                    "--if-missing",
                    "--out",
                    key_path.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let gateway_public = String::from_utf8(out.stdout).unwrap().trim().to_string();
            let meta = std::fs::metadata(&key_path).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o777), (UID, 0o600));
            let gateway_private = std::fs::read_to_string(&key_path)
                .unwrap()
                .trim()
                .to_string();
            (gateway_public, gateway_private)
        },
    );

    let (pid, mut serve, before) = step(
        "`sesame serve` as systemd runs it, as the service user with CAP_NET_ADMIN alone",
        || {
            // Own /run/wireguard (RuntimeDirectory), the service user, CAP_NET_ADMIN alone
            // (ambient, bounding set reduced), no new privileges. This machine's /dev/net/tun is
            // 0600; Debian's udev makes it 0666: the server's private mount namespace gets a 0666
            // node of the same device, as on a Debian server.
            let devdir = tmp.path().join("dev");
            std::fs::create_dir(&devdir).unwrap();
            let logf = File::create(&log).unwrap();
            let launch = format!(
            "mount -t tmpfs none {dev} && mknod -m 0666 {dev}/tun c 10 200 && \
             mount --bind {dev}/tun /dev/net/tun && \
             mount --bind {run} /var/run/wireguard && exec ip netns exec {ns} {setpriv} \
             --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin \
             -- {sesame} serve --config {config}",
            run = rundir.display(),
            dev = devdir.display(),
            ns = gw.name,
            setpriv = setpriv.join(" "),
            config = config.display(),
        );
            let child = Command::new("unshare")
                .args([
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    "-c",
                    &launch,
                ])
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf)
                .spawn()
                .unwrap();
            let pid = child.id().to_string();
            let serve = Proc { child: Some(child) };
            assert!(
                wait_for(Duration::from_secs(60), || api(
                    "GET", "/readyz", None, None
                )
                .0 == 200),
                "serve not ready; log:\n{}",
                log_text()
            );
            // It runs as the service user with CAP_NET_ADMIN (bit 12) only.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let field = |name: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .unwrap()
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .to_string()
            };
            assert_eq!(field("Uid:"), UID.to_string(), "{status}");
            assert_eq!(field("CapEff:"), format!("{:016x}", 1u64 << 12), "{status}");
            assert_eq!(field("CapBnd:"), format!("{:016x}", 1u64 << 12), "{status}");

            (pid, serve, scrape())
        },
    );

    let it_jar = tmp.path().join("it.cookies");
    let (wg, token, code) = step(
        "enrol Marie's laptop (wireguard-go) and reach payroll, not HR",
        || {
            let (st, _) = api(
                "POST",
                "/api/v1/login",
                Some(&json!({"username": "tleroux", "password": tleroux})),
                Some(&it_jar),
            );
            assert_eq!(st, 200);
            let (st, v) = api(
                "POST",
                "/api/v1/enrolment-codes",
                Some(&json!({"username": "mdupont", "device_name": "portable-marie"})),
                Some(&it_jar),
            );
            assert_eq!(st, 201, "{v}");
            let code = v["code"].as_str().unwrap().to_string();
            let wg = WgPeer::start(laptop, "100.64.0.2/32", tmp.path());
            let (st, cfg) = api(
                "POST",
                "/api/v1/enrol",
                Some(
                    &json!({"code": code, "username": "mdupont", "password": mdupont,
                         "public_key": wg.key.public, "hostname": "pc-marie"}),
                ),
                None,
            );
            assert_eq!(st, 201, "{cfg}");
            let token = cfg["device_token"].as_str().unwrap().to_string();
            wg.set_peer(
                laptop,
                &gateway_public,
                &format!("198.18.1.1:{GW_PORT}"),
                &[&format!("{PAIE}/32"), &format!("{RH}/32")],
                1,
            );
            assert!(
                wait_for(Duration::from_secs(15), || laptop
                    .tcp_connects(PAIE, APP_PORT, 2)),
                "payroll unreachable; log:\n{}",
                log_text()
            );
            assert!(laptop.pings(PAIE, 3));
            assert!(
                !laptop.tcp_connects(RH, APP_PORT, 2),
                "HR reachable without a grant"
            );
            (wg, token, code)
        },
    );

    step(
        "stock `wg` through the API socket, from the server's mount namespace",
        || {
            let m = std::fs::metadata(&sock).unwrap();
            assert_eq!(
                (m.uid(), m.mode() & 0o777),
                (UID, 0o600),
                "API socket owner and mode"
            );
            let wg_gw = |args: &[&str]| {
                Command::new("nsenter")
                    .args(["--target", &pid, "--mount", "--net", "wg"])
                    .args(args)
                    .output()
                    .unwrap()
            };
            let out = wg_gw(&["show", &tun, "dump"]);
            assert!(
                out.status.success(),
                "wg show: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let dump = String::from_utf8(out.stdout).unwrap();
            let peer: Vec<&str> = dump
                .lines()
                .find(|l| l.starts_with(&wg.key.public))
                .unwrap_or_else(|| panic!("enrolled peer missing from wg show: {dump}"))
                .split('\t')
                .collect();
            assert_eq!(
                peer[2],
                "198.18.1.2:".to_string() + peer[2].rsplit(':').next().unwrap()
            );
            assert_eq!(peer[3], "100.64.0.2/32");
            let handshake: u64 = peer[4].parse().unwrap();
            let (rx, tx): (u64, u64) = (peer[5].parse().unwrap(), peer[6].parse().unwrap());
            assert!(handshake > 1_700_000_000, "latest handshake {handshake}");
            assert!(rx > 0 && tx > 0, "transfer rx {rx} tx {tx}");
            let human = String::from_utf8(wg_gw(&["show", &tun]).stdout).unwrap();
            assert!(
                human.contains("latest handshake") && human.contains("transfer"),
                "{human}"
            );
            let conf = String::from_utf8(wg_gw(&["showconf", &tun]).stdout).unwrap();
            assert!(conf.contains(&wg.key.public), "{conf}");
            assert!(
                !conf.contains("PrivateKey"),
                "showconf prints a private key: {conf}"
            );
            let out = wg_gw(&["set", &tun, "listen-port", "4242"]);
            assert!(!out.status.success(), "wg set accepted");
            eprintln!(
                "wg set refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        },
    );

    step("metrics moved with the journey", || {
        let after = scrape();
        let moved = |name: &str, labels: &[(&str, &str)]| {
            (sample(&before, name, labels), sample(&after, name, labels))
        };
        let (a, b) = moved("sesame_enrolments_total", &[("outcome", "success")]);
        assert_eq!((a, b), (0.0, 1.0));
        let (a, b) = moved("sesame_logins_total", &[("outcome", "success")]);
        assert_eq!((a, b), (0.0, 1.0));
        let (a, b) = moved("sesame_gateway_rx_packets_total", &[]);
        assert!(b > a, "rx packets {a} -> {b}");
        let (a, b) = moved("sesame_gateway_tx_bytes_total", &[]);
        assert!(b > a, "tx bytes {a} -> {b}");
        assert_eq!(sample(&after, "sesame_gateway_peers_connected", &[]), 1.0);
        assert!(sample(&after, "sesame_ldap_request_seconds_count", &[]) >= 2.0);
        let (a, b) = moved("sesame_database_query_seconds_count", &[]);
        assert!(b > a, "database reads {a} -> {b}");
        assert!(
            sample(
                &after,
                "sesame_directory_sync_last_success_timestamp_seconds",
                &[]
            ) > 0.0
        );
    });

    step(
        "reload granting HR while a steady ping flows to payroll: no reply lost",
        || {
            assert!(
                !log_text().contains("\"level\":\"DEBUG\""),
                "debug before the reload"
            );
            let ping = SteadyPing::start(laptop, PAIE, 100, "0.05");
            std::thread::sleep(Duration::from_secs(1));
            std::fs::write(&config, config_text(&state, &tun, &directory, true)).unwrap();
            // SAFETY: kill(2) on our own child (the server, exec'd through sh and ip netns exec).
            unsafe { libc::kill(pid.parse().unwrap(), libc::SIGHUP) };
            assert!(
                wait_for(Duration::from_secs(15), || laptop
                    .tcp_connects(RH, APP_PORT, 2)),
                "HR still unreachable after the reload; log:\n{}",
                log_text()
            );
            let ping = ping.finish();
            let (sent, received) = (ping.sent, ping.received);
            eprintln!("reload under a steady ping: {sent} sent, {received} received");
            assert_eq!(sent, received, "pings lost through the reload");
            assert!(log_text().contains("configuration reloaded"));
            assert!(
                wait_for(Duration::from_secs(10), || log_text()
                    .contains("\"level\":\"DEBUG\"")),
                "log level not reloaded"
            );
        },
    );

    step(
        "a broken file changes nothing and says where the error is",
        || {
            std::fs::write(
                &config,
                config_text(&state, &tun, &directory, true)
                    .replace("threads = 1", "threads = 1\nmtu = 99"),
            )
            .unwrap();
            // SAFETY: as above.
            unsafe { libc::kill(pid.parse().unwrap(), libc::SIGHUP) };
            assert!(
                wait_for(Duration::from_secs(10), || log_text()
                    .contains("reload refused")),
                "no error logged; log:\n{}",
                log_text()
            );
            let refused = log_text()
                .lines()
                .find(|l| l.contains("reload refused"))
                .unwrap()
                .to_string();
            assert!(
                refused.contains(config.to_str().unwrap()) && refused.contains("gateway.mtu"),
                "{refused}"
            );
            assert!(laptop.tcp_connects(RH, APP_PORT, 2) && laptop.tcp_connects(PAIE, APP_PORT, 2));
            let m = scrape();
            assert_eq!(
                sample(&m, "sesame_config_reloads_total", &[("outcome", "success")]),
                1.0
            );
            assert_eq!(
                sample(&m, "sesame_config_reloads_total", &[("outcome", "failure")]),
                1.0
            );
        },
    );

    step(
        "both reloads are audited, the applied one with what changed",
        || {
            // (Read with the fixed file.)
            std::fs::write(&config, config_text(&state, &tun, &directory, true)).unwrap();
            let events: Vec<Value> = audit_events(&config)
                .into_iter()
                .filter(|e| e["action"] == "config.reloaded")
                .collect();
            assert_eq!(events.len(), 2, "{events:?}");
            assert_eq!(events[0]["outcome"], "success");
            assert_eq!(events[0]["details"]["resources_added"], json!(["rh"]));
            assert_eq!(events[0]["details"]["grants_changed"], json!([PAIE_GROUP]));
            assert_eq!(events[1]["outcome"], "failure");
        },
    );

    step(
        "directory settings apply on reload too: a filter no entry matches refuses every login",
        || {
            let login = || {
                api(
                    "POST",
                    "/api/v1/login",
                    Some(&json!({"username": "tleroux", "password": tleroux})),
                    None,
                )
                .0
            };
            assert_eq!(login(), 200);
            let narrowed = directory.replace(
                "user_filter = \"(uid={username})\"",
                "user_filter = \"(&(uid={username})(description=nobody-has-this))\"",
            );
            assert_ne!(narrowed, directory);
            std::fs::write(&config, config_text(&state, &tun, &narrowed, true)).unwrap();
            // SAFETY: as above.
            unsafe { libc::kill(pid.parse().unwrap(), libc::SIGHUP) };
            assert!(
                wait_for(Duration::from_secs(10), || login() == 401),
                "the new user_filter was not applied; log:\n{}",
                log_text()
            );
            // (The next sync passes use that filter too: Marie is no longer found and loses her device,
            // as a deleted user would.)
        },
    );

    step("clean stop: the API socket goes away", || {
        let st = serve.signal_and_wait(libc::SIGTERM, Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "serve did not stop cleanly: {st:?}\n{}",
            log_text()
        );
        assert!(!sock.exists(), "API socket left after shutdown");
    });

    step(
        "every line is JSON, and no log of any server holds a secret",
        || {
            for line in log_text().lines().filter(|l| !l.trim().is_empty()) {
                let v: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(
                    v["level"].is_string() && v["timestamp"].is_string(),
                    "{line}"
                );
            }
            let session = std::fs::read_to_string(&it_jar)
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with('#') || l.starts_with("#HttpOnly_"))
                .filter_map(|l| l.split('\t').nth(6).map(str::to_string))
                .find(|v| v.len() >= 16)
                .expect("session cookie in the jar");
            let secrets = [
                ("IT password", tleroux.to_string()),
                ("user password", mdupont.to_string()),
                ("service password", service_password.trim().to_string()),
                ("gateway private key", gateway_private),
                ("laptop private key", wg.key.private.trim().to_string()),
                ("device token", token),
                ("enrolment code", code),
                ("session cookie", session),
            ];
            let mut logs = vec![log.clone(), slapd.log_path(), res_log.clone()];
            logs.push(tmp.path().join(format!("{}.log", wg.interface)));
            for path in &logs {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                for (what, secret) in &secrets {
                    assert!(!secret.is_empty());
                    assert!(
                        !text.contains(secret.as_str()),
                        "{what} found in {}",
                        path.display()
                    );
                }
            }
            drop(wg);
        },
    );
}
