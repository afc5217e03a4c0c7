//! Access windows with a real wireguard-go laptop behind `sesame serve`: payroll (`mfa = true`)
//! is refused until the device opens a window while HR (ordinary) answers; the refusals are
//! audited as `flow.denied` reason `mfa_required`; payroll answers within 2 s of a good code
//! (`POST /api/v1/device/unlock`), is refused again when the window idles and when it ends, the
//! end kept on time by the gateway with the database stopped. Needs root.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::steps::step;
use crate::require_root;

use std::time::Duration;

use common::config::ROLES;
use common::netns::wait_for;
use common::serve::{
    api, audit_events, enrol, login, of_action, Builder, World, APP_PORT, PAIE, RH,
};
use common::world::Topology;

/// Payroll needs the second factor, HR does not; payroll managers (mdupont) get both.
fn sections(mfa: &str) -> String {
    format!(
        r#"{ROLES}
{mfa}
[[resource]]
name = "paie"
allow = ["{PAIE}/32 tcp:{APP_PORT}", "{PAIE}/32 icmp"]
mfa = true

[[resource]]
name = "rh"
allow = ["{RH}/32 tcp:{APP_PORT}", "{RH}/32 icmp"]

[[grant]]
group = "cn=gestionnaires-paie,ou=groups,dc=academie,dc=test"
resources = ["paie", "rh"]

[audit]
flow_window = "1s"
"#
    )
}

/// Marie's laptop enrolled (its wireguard-go key), its tunnel routing both hosts; the device
/// token and the TOTP secret to register (base32) back.
fn enrolled(w: &World) -> (String, String) {
    let it = w.dir.path().join("it.cookies");
    login(&it, "tleroux");
    let cfg = enrol(&it, "mdupont", "portable-marie", &w.wg().key.public);
    w.wg().set_peer(
        w.laptop(),
        &w.gateway_public,
        &Topology::endpoint(0),
        &[&format!("{PAIE}/32"), &format!("{RH}/32")],
        1,
    );
    assert!(
        w.until_reach(RH, true, Duration::from_secs(15)).is_some(),
        "HR unreachable; log:\n{}",
        w.log_text()
    );
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&cfg["device_token"]),
        text(&cfg["mfa_registration"]["secret"]),
    )
}

#[test]
fn payroll_needs_an_open_window_while_hr_answers() {
    require_root!("network namespaces, TUN, wireguard-go");
    let w = Builder::new("mf")
        .laptops(1)
        .sections(&sections("[mfa]\nweb_roles = []\n"))
        .build();
    step(
        "Marie's laptop enrols; HR answers through the tunnel",
        || {
            enrolled(&w);
        },
    );
    step("payroll is refused: no access window is open", || {
        assert!(!w.reaches(PAIE));
        assert!(!w.laptop().pings(PAIE, 2));
        assert!(w.reaches(RH));
    });
    step("the refusals are audited as mfa_required", || {
        let found = wait_for(Duration::from_secs(10), || {
            let events = audit_events(&w.config);
            of_action(&events, "flow.denied")
                .iter()
                .any(|e| e["details"]["reason"] == "mfa_required" && e["details"]["dst"] == PAIE)
        });
        assert!(found, "no flow.denied mfa_required; log:\n{}", w.log_text());
        let events = audit_events(&w.config);
        assert!(of_action(&events, "flow.allowed")
            .iter()
            .any(|e| e["details"]["resource"] == "rh"));
        assert!(!of_action(&events, "flow.allowed")
            .iter()
            .any(|e| e["details"]["resource"] == "paie"));
    });
}

/// The unlock journey on a short clock (`[mfa] session = "70s"`, `idle = "1m"`, the shortest the
/// configuration takes): a confirmed factor, unlocks with recovery codes (single use, no wait for
/// the next TOTP step), the window ending by idleness, then by its end with PostgreSQL stopped.
#[test]
fn a_window_opens_with_a_code_closes_when_idle_and_ends_on_time_with_the_database_down() {
    require_root!("network namespaces, TUN, wireguard-go, PostgreSQL");
    // IT's web login without a code: this test is about the laptop's window.
    let mfa = "[mfa]\nsession = \"70s\"\nidle = \"1m\"\nweb_roles = []\n";
    let w = Builder::new("mu")
        .laptops(1)
        .postgres()
        .sections(&sections(mfa))
        .build();
    let (token, secret) = step("Marie's laptop enrols and registers its factor", || {
        enrolled(&w)
    });
    let recovery = step(
        "the first code confirms the factor: ten recovery codes",
        || {
            let secret = totp_rs::Secret::try_from_base32(&secret).unwrap();
            let secret: &[u8] = secret.as_ref();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let code = sesame::mfa::totp::code_at(secret, now);
            let (st, v) = api(
                "POST",
                "/api/v1/device/mfa/confirm",
                Some(&serde_json::json!({ "code": code })),
                None,
                Some(&token),
            );
            assert_eq!(st, 200, "{v}");
            let codes: Vec<String> = v["recovery_codes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            assert_eq!(codes.len(), 10);
            codes
        },
    );
    let unlock = |code: &str| {
        api(
            "POST",
            "/api/v1/device/unlock",
            Some(&serde_json::json!({ "code": code })),
            None,
            Some(&token),
        )
    };
    step(
        "before unlocking, payroll is refused and HR answers",
        || {
            assert!(!w.reaches(PAIE));
            assert!(w.reaches(RH));
        },
    );
    step(
        "a valid code opens payroll within 2 s; HR keeps answering",
        || {
            let (st, v) = unlock(&recovery[0]);
            assert_eq!(st, 200, "{v}");
            assert!(v["expires_at"].is_string(), "{v}");
            let took = w.until_reach(PAIE, true, Duration::from_secs(2));
            assert!(
                took.is_some(),
                "payroll closed 2 s after unlock; log:\n{}",
                w.log_text()
            );
            assert!(w.reaches(RH));
        },
    );
    step("no payroll packet for `idle` closes the window", || {
        std::thread::sleep(Duration::from_secs(61));
        assert!(!w.reaches(PAIE));
        assert!(w.reaches(RH));
        let found = wait_for(Duration::from_secs(10), || {
            let events = audit_events(&w.config);
            of_action(&events, "mfa.window_closed")
                .iter()
                .any(|e| e["details"]["reason"] == "idle")
        });
        assert!(found, "no mfa.window_closed idle; log:\n{}", w.log_text());
    });
    step(
        "database stopped with a window open: payroll until the window's end, then refused",
        || {
            let (st, v) = unlock(&recovery[1]);
            assert_eq!(st, 200, "{v}");
            let opened = std::time::Instant::now();
            assert!(w.until_reach(PAIE, true, Duration::from_secs(2)).is_some());
            w.pg.as_ref().unwrap().stop();
            // Payroll traffic keeps the window from idling until its end (70 s).
            while opened.elapsed() < Duration::from_secs(60) {
                assert!(w.reaches(PAIE), "payroll closed before the window's end");
                std::thread::sleep(Duration::from_secs(10));
            }
            assert!(w
                .until_reach(PAIE, false, Duration::from_secs(20))
                .is_some());
            assert!(opened.elapsed() >= Duration::from_secs(69));
            assert!(w.reaches(RH));
            // No window opens while the database is down.
            let (st, _) = unlock(&recovery[2]);
            assert_ne!(st, 200);
            assert!(!w.reaches(PAIE));
        },
    );
}
