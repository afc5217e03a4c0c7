//! The laptop journey with the real agent: `sesame serve` (portal + gateway + directory sync) and a
//! real slapd in a gateway namespace, resource hosts behind it, `sesame-agent` in a laptop
//! namespace: enrol errors, enrol, up, grants, live grant change, rotate, revoke, down.
//! Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::too_many_lines)]

use crate::common;
use crate::common::agent as agent_common;
use crate::common::cli;
use crate::common::steps::step;
use crate::require_root;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agent_common::agent_bin;
use common::netns::{link, unique, wait_for, Netns};
use common::serve::{Builder, APP_PORT, GRANTS, GW_PORT, PAIE, RH, ROLES};
use common::slapd::password_of;
use common::wg::WgPeer;

const PORTAL_PORT: u16 = 8080;
const GW_UNDERLAY: &str = "198.18.1.1";

/// The serve world (one laptop, no wireguard-go: the agent is the client) and the agent's
/// interface name.
struct World {
    w: common::serve::World,
    iface: String,
}

impl std::ops::Deref for World {
    type Target = common::serve::World;
    fn deref(&self) -> &common::serve::World {
        &self.w
    }
}

impl World {
    fn portal(&self) -> String {
        format!("http://{GW_UNDERLAY}:{PORTAL_PORT}")
    }

    fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// `sesame-agent ARGS` in the laptop namespace, English messages, `stdin` piped in.
    fn agent(&self, args: &[&str], stdin: &str, lang: &str) -> Output {
        let mut child = self
            .laptop()
            .command(agent_bin().to_str().unwrap())
            .args(args)
            .env("LANG", lang)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn enrol(&self, user: &str, password: &str, code: &str, dir: &Path, lang: &str) -> Output {
        let portal = self.portal();
        self.agent(
            &[
                "enrol",
                "--portal",
                &portal,
                "--code",
                code,
                "--user",
                user,
                "--password-stdin",
                // The portal is plain HTTP on the gateway's underlay address (a lab).
                "--insecure",
                "--dir",
                dir.to_str().unwrap(),
            ],
            &format!("{password}\n"),
            lang,
        )
    }

    fn sesame(&self, args: &[&str]) -> Output {
        cli::sesame(args).config(&self.config).output()
    }

    fn code(&self, user: &str, ttl: &str) -> String {
        let out = self.sesame(&[
            "enrol-code",
            "create",
            "--user",
            user,
            "--device",
            &format!("pc-{user}"),
            "--ttl",
            ttl,
        ]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn status(&self) -> String {
        text(&self.agent(
            &["status", "--dir", self.agent_dir().to_str().unwrap()],
            "",
            "en_GB.UTF-8",
        ))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Never leave a daemon behind, even when the test failed half-way.
        let dir = self.agent_dir();
        let _ = self
            .laptop()
            .command(agent_bin().to_str().unwrap())
            .args(["down", "--dir", dir.to_str().unwrap()])
            .output();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn setup() -> World {
    agent_bin();
    let w = Builder::new("sa")
        .laptops(1)
        .no_wireguard()
        .portal(&format!(
            "listen = \"0.0.0.0:{PORTAL_PORT}\"\npublic_url = \"http://{GW_UNDERLAY}:{PORTAL_PORT}\"\ninsecure_plaintext = true\n"
        ))
        .sync_interval("1s")
        .sections(&format!(
            r#"{ROLES}
[[resource]]
name = "paie"
description = "Paie / Payroll"
allow = ["{PAIE}/32 tcp:{APP_PORT}"]

[[resource]]
name = "rh"
description = "Ressources humaines / HR"
allow = ["{RH}/32 tcp:{APP_PORT}"]

{GRANTS}"#
        ))
        .build();
    World {
        w,
        iface: unique("sa"),
    }
}

#[test]
fn agent_journey_enrol_up_grants_rotate_revoke_down() {
    require_root!("network namespaces, TUN, wireguard-go");
    let w = setup();
    let dir = w.agent_dir();
    let dir_s = dir.to_str().unwrap();
    let en = "en_GB.UTF-8";
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let code = step(
        "every enrolment error a user can meet, each with its own message; nothing written",
        || {
            let out = w.enrol(
                "sbernard",
                password_of("sbernard"),
                "ZZZZ-ZZZZ-ZZZZ",
                &dir,
                en,
            );
            assert!(
                !out.status.success() && text(&out).contains("Unknown enrolment code"),
                "{}",
                text(&out)
            );
            // Codes live 1 minute at least (the CLI and the API share the bounds): age this one in the
            // database instead of waiting.
            let expired = w.code("fnoel", "1m");
            let url = format!("sqlite://{}", w.dir.path().join("sesame.db").display());
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let store = sesame::store::Store::connect(&url).await.unwrap();
                sqlx::query("UPDATE enrolment_codes SET expires_at = 1 WHERE username = 'fnoel'")
                    .execute(store.pool())
                    .await
                    .unwrap();
                store.close().await;
            });
            let out = w.enrol("fnoel", password_of("fnoel"), &expired, &dir, en);
            assert!(text(&out).contains("has expired"), "{}", text(&out));
            let jmartin_code = w.code("jmartin", "1h");
            let out = w.enrol("tleroux", password_of("tleroux"), &jmartin_code, &dir, en);
            assert!(
                text(&out).contains("issued for another account than \"tleroux\""),
                "{}",
                text(&out)
            );
            let code = w.code("mdupont", "1h");
            // A right password without VPN access, an unknown user or a disabled account get
            // this same answer (no password oracle: tests/plain/password_oracle.rs); the
            // message says what to do in every case. (Each counts: a 5th failure from this
            // address would refuse the next enrolment for a minute.)
            let out = w.enrol("mdupont", "not-her-password", &code, &dir, en);
            assert!(
                text(&out).contains("Wrong username or password")
                    && text(&out).contains("may have no VPN access"),
                "{}",
                text(&out)
            );
            assert!(!dir.join("sesame.conf").exists() && !dir.join("agent.toml").exists());
            code
        },
    );

    let (old_private, old_public) = step(
        "enrolment: files private, key made on the laptop (the portal only knows its public half)",
        || {
            let out = w.enrol("mdupont", password_of("mdupont"), &code, &dir, en);
            assert!(out.status.success(), "{}", text(&out));
            assert!(
                text(&out).contains("This laptop is enrolled"),
                "{}",
                text(&out)
            );
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("sesame.conf")), 0o600);
            assert_eq!(mode(&dir.join("agent.toml")), 0o600);
            let conf = std::fs::read_to_string(dir.join("sesame.conf")).unwrap();
            assert!(conf.contains("Address = 100.64.0.2/32"), "{conf}");
            assert!(
                conf.contains(&format!("AllowedIPs = {PAIE}/32\n")),
                "{conf}"
            );
            assert!(
                conf.contains(&format!("Endpoint = {GW_UNDERLAY}:{GW_PORT}")),
                "{conf}"
            );
            let old_private = agent_common::conf_value(&conf, "PrivateKey");
            let old_public = agent_common::wg_pubkey(&old_private);
            let devices = text(&w.sesame(&["devices", "list"]));
            assert!(devices.contains(&old_public), "{devices}");
            assert!(!devices.contains(&old_private), "{devices}");
            (old_private, old_public)
        },
    );

    step(
        "the file enrol wrote works unchanged with a stock WireGuard",
        || {
            // wireguard-go + `wg setconf` after `wg-quick strip`, as the official clients use it.
            {
                let stock = WgPeer::start(w.laptop(), "100.64.0.2/32", w.dir.path());
                let stripped = w.dir.path().join("stripped.conf");
                let out = Command::new("wg-quick")
                    .args(["strip", dir.join("sesame.conf").to_str().unwrap()])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", text(&out));
                std::fs::write(&stripped, &out.stdout).unwrap();
                w.laptop().exec_ok(
                    "wg",
                    &["setconf", &stock.interface, stripped.to_str().unwrap()],
                );
                w.laptop().ip(&[
                    "route",
                    "replace",
                    &format!("{PAIE}/32"),
                    "dev",
                    &stock.interface,
                ]);
                assert!(
                    wait_for(Duration::from_secs(15), || w.reaches(PAIE)),
                    "stock WireGuard with sesame.conf: payroll unreachable"
                );
                w.laptop().ip(&["link", "del", &stock.interface]);
            }
        },
    );

    step("up: payroll answers, HR is not even routed", || {
        let out = w.agent(
            &[
                "up",
                "--dir",
                dir_s,
                "--interface",
                &w.iface,
                "--refresh",
                "1",
            ],
            "",
            en,
        );
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out),
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        assert!(
            wait_for(Duration::from_secs(15), || w.reaches(PAIE)),
            "payroll unreachable"
        );
        assert!(!w.reaches(RH), "HR reachable without a grant");
        let routes = String::from_utf8_lossy(&w.laptop().ip(&["route", "show"]).stdout).to_string();
        assert!(
            routes.contains(&format!("{PAIE} dev {}", w.iface)) && !routes.contains(RH),
            "{routes}"
        );
        let status = w.status();
        assert!(
            status.contains(&format!("State: connected ({})", w.iface)),
            "{status}"
        );
        assert!(
            status.contains("- paie — Paie / Payroll (198.18.10.10/32)"),
            "{status}"
        );
        assert!(!status.contains("- rh"), "{status}");
        assert!(status.contains("Key valid until: 20"), "{status}");
    });

    step(
        "IT grants HR in the directory: the route appears without dropping the tunnel, then goes",
        || {
            w.slapd.add_to_group("mdupont", "gestionnaires-rh");
            assert!(
                wait_for(Duration::from_secs(20), || w.reaches(RH)),
                "HR grant never reached the laptop"
            );
            assert!(w.reaches(PAIE));
            assert!(w.status().contains("- rh — Ressources humaines / HR"));
            w.slapd.remove_from_group("mdupont", "gestionnaires-rh");
            assert!(
                wait_for(Duration::from_secs(20), || !w.reaches(RH)),
                "HR grant never withdrawn"
            );
            assert!(wait_for(Duration::from_secs(10), || {
                !String::from_utf8_lossy(&w.laptop().ip(&["route", "show"]).stdout).contains(RH)
            }));
        },
    );

    let pending_private = step(
        "a rotation cut before the portal answers keeps the old, working config",
        || {
            // The next one offers the same pending key.
            let agent_toml = std::fs::read_to_string(dir.join("agent.toml")).unwrap();
            let portal_line = format!("portal = \"{}\"", w.portal());
            assert!(agent_toml.contains(&portal_line), "{agent_toml}");
            std::fs::write(
                dir.join("agent.toml"),
                agent_toml.replace(
                    &portal_line,
                    &format!("portal = \"http://{GW_UNDERLAY}:9\""),
                ),
            )
            .unwrap();
            let out = w.agent(&["rotate", "--dir", dir_s], "", en);
            assert!(
                !out.status.success() && text(&out).contains("key change was interrupted"),
                "{}",
                text(&out)
            );
            std::fs::write(dir.join("agent.toml"), &agent_toml).unwrap();
            let pending = std::fs::read_to_string(dir.join("sesame.conf.pending")).unwrap();
            let pending_private = agent_common::conf_value(&pending, "PrivateKey");
            let conf_now = std::fs::read_to_string(dir.join("sesame.conf")).unwrap();
            assert_eq!(
                agent_common::conf_value(&conf_now, "PrivateKey"),
                old_private
            );
            assert!(w.reaches(PAIE), "the interrupted rotation broke the tunnel");
            pending_private
        },
    );

    step(
        "rotate: new key, tunnel keeps working, the old key is refused by the gateway",
        || {
            let out = w.agent(&["rotate", "--dir", dir_s], "", en);
            assert!(
                out.status.success() && text(&out).contains("New key in place"),
                "{}",
                text(&out)
            );
            let conf = std::fs::read_to_string(dir.join("sesame.conf")).unwrap();
            let new_private = agent_common::conf_value(&conf, "PrivateKey");
            assert_ne!(new_private, old_private);
            assert_eq!(
                new_private, pending_private,
                "the pending key was not the one sent"
            );
            assert_eq!(mode(&dir.join("sesame.conf")), 0o600);
            assert!(!dir.join("sesame.conf.pending").exists());
            let devices = text(&w.sesame(&["devices", "list"]));
            assert!(
                devices.contains(&agent_common::wg_pubkey(&new_private))
                    && !devices.contains(&old_public),
                "{devices}"
            );
            assert!(
                wait_for(Duration::from_secs(15), || w.reaches(PAIE)),
                "payroll lost after rotation"
            );
            {
                // A thief with the old key, from another namespace, gets nothing through.
                let thief = Netns::new("sah");
                link(&w.gw, "198.18.2.1/30", &thief, "198.18.2.2/30");
                let peer = WgPeer::start(&thief, "100.64.0.2/32", w.dir.path());
                let key = w.dir.path().join("old.key");
                std::fs::write(&key, &old_private).unwrap();
                thief.exec_ok(
                    "wg",
                    &["set", &peer.interface, "private-key", key.to_str().unwrap()],
                );
                let gw_public = agent_common::conf_value(&conf, "PublicKey");
                peer.set_peer(
                    &thief,
                    &gw_public,
                    &format!("198.18.2.1:{GW_PORT}"),
                    &[&format!("{PAIE}/32")],
                    1,
                );
                assert!(
                    !thief.tcp_connects(PAIE, APP_PORT, 3),
                    "the old key still works"
                );
                assert_eq!(
                    peer.latest_handshake(&thief),
                    0,
                    "the gateway answered the old key"
                );
            }
        },
    );

    step(
        "IT revokes the laptop: status says so and what to do",
        || {
            let id = agent_common::toml_value(
                &std::fs::read_to_string(dir.join("agent.toml")).unwrap(),
                "device_id",
            );
            let out = w.sesame(&["devices", "revoke", &id]);
            assert!(out.status.success(), "{}", text(&out));
            assert!(
                wait_for(Duration::from_secs(10), || !w.reaches(PAIE)),
                "revoked laptop still reaches payroll"
            );
            let status = w.status();
            assert!(
                status.contains("This laptop was revoked by IT")
                    && status.contains("sesame-agent down"),
                "{status}"
            );
            assert!(status.contains("State: not connected"), "{status}");
            let fr = text(&w.agent(&["status", "--dir", dir_s], "", "fr_FR.UTF-8"));
            assert!(fr.contains("révoqué par le service informatique"), "{fr}");
        },
    );

    step("down: no interface, no route left", || {
        let out = w.agent(&["down", "--dir", dir_s], "", en);
        assert!(
            out.status.success() && text(&out).contains("stopped"),
            "{}",
            text(&out)
        );
        let links =
            String::from_utf8_lossy(&w.laptop().ip(&["-o", "link", "show"]).stdout).to_string();
        assert!(!links.contains(&w.iface), "{links}");
        let routes = String::from_utf8_lossy(&w.laptop().ip(&["route", "show"]).stdout).to_string();
        assert!(
            !routes.contains("198.18.10.") && !routes.contains("198.18.20."),
            "{routes}"
        );
        let _ = (&w.serve, &w.log);
    });
}

/// A reload (SIGHUP) that grants a resource reaches the portal, not only the gateway: the
/// device's configuration lists it at once and the running agent routes it (before the one live
/// configuration, the gateway allowed HR while `GET /api/v1/device/config` still said payroll
/// only, so the agent never routed it).
#[test]
fn a_reload_granting_a_resource_reaches_the_device_config_and_the_agents_routes() {
    require_root!("network namespaces, TUN");
    let w = setup();
    let dir = w.agent_dir();
    let dir_s = dir.to_str().unwrap();
    let en = "en_GB.UTF-8";
    let code = w.code("mdupont", "1h");
    let out = w.enrol("mdupont", password_of("mdupont"), &code, &dir, en);
    assert!(out.status.success(), "{}", text(&out));
    let token = agent_common::toml_value(
        &std::fs::read_to_string(dir.join("agent.toml")).unwrap(),
        "device_token",
    );
    let granted = || {
        let (st, cfg) =
            common::serve::api("GET", "/api/v1/device/config", None, None, Some(&token));
        assert_eq!(st, 200, "{cfg}");
        cfg["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(granted(), ["paie"]);
    let out = w.agent(
        &[
            "up",
            "--dir",
            dir_s,
            "--interface",
            &w.iface,
            "--refresh",
            "1",
        ],
        "",
        en,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_for(Duration::from_secs(15), || w.reaches(PAIE)),
        "payroll unreachable"
    );
    assert!(!w.reaches(RH), "HR reachable without a grant");

    // Payroll managers get HR too, in the file; SIGHUP.
    let config = std::fs::read_to_string(&w.config).unwrap();
    let paie_only = "resources = [\"paie\"]";
    assert_eq!(config.matches(paie_only).count(), 1, "{config}");
    w.reload(&config.replace(paie_only, "resources = [\"paie\", \"rh\"]"));
    assert_eq!(granted(), ["paie", "rh"], "the portal kept the old grants");
    assert!(
        wait_for(Duration::from_secs(15), || w.reaches(RH)),
        "HR granted by the reload never reached the laptop; log:\n{}",
        w.log_text()
    );
    let routes = String::from_utf8_lossy(&w.laptop().ip(&["route", "show"]).stdout).to_string();
    assert!(
        routes.contains(&format!("{RH} dev {}", w.iface)),
        "{routes}"
    );
    assert!(w.reaches(PAIE));
}
