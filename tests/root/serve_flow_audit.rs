//! End to end: sessions and flows through a real wireguard-go tunnel reach the audit log of the
//! real `sesame serve` (slapd, laptops and resource hosts in network namespaces). Needs root.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::steps::step;
use crate::require_root;

use std::process::Command;
use std::time::Duration;

use common::netns::wait_for;
use common::serve::{
    api, audit_events, audit_verify, enrol, login, of_action, setup_with, APP_PORT, GW_PORT,
    METRICS, PAIE, RH,
};
use serde_json::{json, Value};

/// Sessions and flows through a real tunnel reach the audit log: session start with the laptop's
/// endpoint, allowed flows with exact bytes and ports, denied flows (no grant), the session's end
/// on revocation (with its counts) and at shutdown.
#[test]
fn serve_audits_sessions_and_flows_of_a_real_tunnel() {
    require_root!("network namespaces, TUN, wireguard-go");
    let mut w = setup_with("[audit]\nflow_window = \"1s\"\n");
    let it_jar = w.dir.path().join("it.cookies");
    let device_id = step("Marie's laptop enrols and reaches payroll", || {
        login(&it_jar, "tleroux");
        let cfg = enrol(&it_jar, "mdupont", "portable-marie", &w.wg().key.public);
        w.laptop_tunnel_up();
        cfg["device_id"].as_i64().unwrap()
    });
    // Pings alone in windows of their own: exact counts. 3 × (20 + 8 + 100) bytes each way.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let (pings_from, events) = step(
        "three pings to payroll, two denied connects: all in the log",
        || {
            std::thread::sleep(Duration::from_millis(1_100 - (now_ms() % 1000) as u64));
            let pings_from = now_ms() - now_ms() % 1000;
            w.laptop()
                .exec_ok("ping", &["-n", "-c", "3", "-i", "0.2", "-s", "100", PAIE]);
            // Denied: a host not granted, a port not granted.
            assert!(!w.laptop().tcp_connects(RH, APP_PORT, 1));
            assert!(!w.laptop().tcp_connects(PAIE, 22, 1));
            // Windows of 1 s close 1 s (grace) later and the writer drains every 200 ms.
            let mut events = Vec::new();
            let found = wait_for(Duration::from_secs(10), || {
                events = audit_events(&w.config);
                of_action(&events, "flow.denied").len() >= 2
            });
            assert!(found, "no flow.denied; log:\n{}", w.log_text());
            (pings_from, events)
        },
    );

    let started_at = step(
        "the session start names the device, its owner, key and endpoint",
        || {
            let started = of_action(&events, "tunnel.session_started");
            assert_eq!(started.len(), 1, "{started:?}");
            let s = started[0];
            assert_eq!(s["actor"], "mdupont");
            assert_eq!(s["target"], format!("device:{device_id}"));
            assert_eq!(s["outcome"], "success");
            assert_eq!(s["source_ip"], "198.18.1.2");
            assert_eq!(s["details"]["device_id"], device_id);
            assert_eq!(s["details"]["username"], "mdupont");
            assert_eq!(s["details"]["public_key"], w.wg().key.public);
            assert_eq!(
                s["details"]["endpoint"],
                format!("198.18.1.2:{}", w.wg().listen_port(w.laptop()))
            );
            s["details"]["started_at"].clone()
        },
    );

    step(
        "allowed flows: payroll's port and the pings, counted exactly",
        || {
            let allowed = of_action(&events, "flow.allowed");
            assert!(allowed.iter().all(|e| e["details"]["resource"] == "paie"
                && e["actor"] == "mdupont"
                && e["source_ip"] == "198.18.1.2"));
            // The TCP connects of `until_reach`: port 8443.
            assert!(
                allowed
                    .iter()
                    .any(|e| e["details"]["ports"] == json!([APP_PORT])
                        && e["details"]["protocols"] == json!(["tcp"])),
                "{allowed:?}"
            );
            let window_ms = |e: &Value| {
                sesame::time::parse(
                    "window_start",
                    e["details"]["window_start"].as_str().unwrap(),
                    0,
                )
                .unwrap()
            };
            let pings: Vec<_> = allowed
                .iter()
                .filter(|e| window_ms(e) >= pings_from)
                .filter(|e| e["details"]["protocols"] == json!(["icmp"]))
                .collect();
            let sum = |k: &str| -> u64 {
                pings
                    .iter()
                    .map(|e| e["details"][k].as_u64().unwrap())
                    .sum()
            };
            assert_eq!(
                (
                    sum("packets_out"),
                    sum("bytes_out"),
                    sum("packets_in"),
                    sum("bytes_in")
                ),
                (3, 3 * 128, 3, 3 * 128),
                "{pings:?}"
            );
            assert_eq!(sum("bytes"), 6 * 128);
        },
    );

    step(
        "denied flows: a host not granted, a port not granted",
        || {
            let denied = of_action(&events, "flow.denied");
            let mut seen: Vec<(String, i64, String)> = denied
                .iter()
                .map(|e| {
                    assert_eq!(e["outcome"], "denied");
                    assert_eq!(e["target"], format!("device:{device_id}"));
                    assert!(e["details"]["count"].as_u64().unwrap() >= 1);
                    (
                        e["details"]["dst"].as_str().unwrap().to_string(),
                        e["details"]["port"].as_i64().unwrap(),
                        e["details"]["reason"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            seen.sort();
            seen.dedup();
            assert_eq!(
                seen,
                vec![
                    (PAIE.to_string(), 22, "no_grant".to_string()),
                    (RH.to_string(), i64::from(APP_PORT), "no_grant".to_string()),
                ]
            );
        },
    );

    let cfg2 = step(
        "a second laptop with a live session when the gateway stops",
        || {
            let cfg2 = enrol(&it_jar, "sbernard", "portable-sophie", &w.wg2().key.public);
            w.wg2().set_peer(
                w.laptop2(),
                &w.gateway_public,
                &format!("198.18.2.1:{GW_PORT}"),
                &[&format!("{RH}/32")],
                1,
            );
            assert!(wait_for(Duration::from_secs(15), || w
                .laptop2()
                .tcp_connects(RH, APP_PORT, 2)));
            cfg2
        },
    );

    let ended = step("revocation ends Marie's session with its counts", || {
        let (st, _) = api(
            "DELETE",
            &format!("/api/v1/devices/{device_id}"),
            None,
            Some(&it_jar),
            None,
        );
        assert_eq!(st, 200);
        let mut ended = Vec::new();
        assert!(wait_for(Duration::from_secs(10), || {
            ended = audit_events(&w.config);
            !of_action(&ended, "tunnel.session_ended").is_empty()
        }));
        let e = of_action(&ended, "tunnel.session_ended")[0].clone();
        assert_eq!(e["target"], format!("device:{device_id}"));
        let d = &e["details"];
        assert_eq!(d["reason"], "revoked");
        assert!(d["rx_packets"].as_u64().unwrap() >= 3 + 2);
        assert!(d["tx_packets"].as_u64().unwrap() >= 3);
        assert!(d["rx_bytes"].as_u64().unwrap() >= 3 * 128);
        assert!(d["tx_bytes"].as_u64().unwrap() >= 3 * 128);
        assert!(d["duration_ms"].as_i64().unwrap() > 0);
        assert_eq!(d["started_at"], started_at);
        ended
    });

    step("nothing was lost, and /metrics says so per kind", || {
        let out = Command::new("curl").args(["-s", METRICS]).output().unwrap();
        let m = String::from_utf8_lossy(&out.stdout);
        for kind in [
            "flow.allowed",
            "flow.denied",
            "tunnel.session_started",
            "tunnel.session_ended",
        ] {
            let line = format!("sesame_audit_records_lost_total{{kind=\"{kind}\"}} 0");
            assert!(m.contains(&line), "{line} missing from:\n{m}");
        }
        assert!(of_action(&ended, "audit.overflow").is_empty());
    });

    step(
        "stopping the gateway ends Sophie's session and writes it before exit",
        || {
            w.stop_serve();
            let events = audit_events(&w.config);
            let stopped: Vec<_> = of_action(&events, "tunnel.session_ended")
                .into_iter()
                .filter(|e| e["details"]["reason"] == "gateway_stopped")
                .collect();
            assert_eq!(stopped.len(), 1, "{stopped:?}");
            assert_eq!(
                stopped[0]["target"],
                format!("device:{}", cfg2["device_id"])
            );
            assert!(stopped[0]["details"]["rx_bytes"].as_u64().unwrap() > 0);
            // Sophie's allowed TCP to rh reached the log at shutdown too (partial window flushed).
            assert!(of_action(&events, "flow.allowed")
                .iter()
                .any(|e| e["actor"] == "sbernard" && e["details"]["resource"] == "rh"));
            audit_verify(&w.config);
        },
    );
}
