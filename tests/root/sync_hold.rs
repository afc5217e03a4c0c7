//! A held directory sync holds only what is mass: with `sesame serve`, a real slapd and two
//! wireguard-go laptops, a pass over `max_changes_per_sync` (two users vanished) still applies at
//! once a disabled account and a group left, and only the vanished users' suspensions wait.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::steps::step;
use crate::require_root;

use std::time::Duration;

use common::netns::wait_for;
use common::serve::{
    api, audit_events, enrol, login, of_action, Builder, World, APP_PORT, GW_PORT, PAIE, RH, SYNC,
};
use common::wg::genkey;
use serde_json::Value;

/// The users who vanish from the directory, 6 laptops each: 12 suspensions, over the limit of
/// 20 active devices at 5% (at least 10).
const VANISHED: [&str; 2] = ["fnoel", "jmartin"];

fn e_reaches(w: &World, ip: &str) -> bool {
    w.laptop2().tcp_connects(ip, APP_PORT, 2)
}

fn held_events(w: &World) -> Vec<Value> {
    of_action(&audit_events(&w.config), "directory.sync_held")
        .into_iter()
        .cloned()
        .collect()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_held_sync_still_cuts_the_disabled_and_the_group_leavers() {
    require_root!("network namespaces, TUN, wireguard-go");
    let w = Builder::new("sh")
        .directory("max_changes_per_sync = \"5%\"")
        .build();
    let it_jar = w.dir.path().join("it.cookies");
    // E (Sophie, HR) is also a payroll manager; D is Marie (payroll).
    w.slapd.add_to_group("sbernard", "gestionnaires-paie");

    step(
        "20 active devices: D's and E's wireguard-go laptops, 18 others",
        || {
            login(&it_jar, "tleroux");
            let d = enrol(&it_jar, "mdupont", "portable-marie", &w.wg().key.public);
            assert_eq!(d["tunnel_address"], "100.64.0.2");
            let e = enrol(&it_jar, "sbernard", "portable-sophie", &w.wg2().key.public);
            assert_eq!(e["tunnel_address"], "100.64.0.3");
            for (user, n) in [
                ("fnoel", 6),
                ("jmartin", 6),
                ("hlefevre", 3),
                ("tleroux", 3),
            ] {
                for i in 0..n {
                    enrol(&it_jar, user, &format!("pc-{user}-{i}"), &genkey().public);
                }
            }
            let (st, v) = api(
                "GET",
                "/api/v1/devices?status=active",
                None,
                Some(&it_jar),
                None,
            );
            assert_eq!(st, 200, "{v}");
            assert_eq!(v.as_array().unwrap().len(), 20);
        },
    );

    step("D reaches payroll; E reaches payroll and HR", || {
        w.laptop_tunnel_up();
        w.wg2().set_peer(
            w.laptop2(),
            &w.gateway_public,
            &format!("198.18.2.1:{GW_PORT}"),
            &[&format!("{PAIE}/32"), &format!("{RH}/32")],
            1,
        );
        assert!(wait_for(Duration::from_secs(15), || e_reaches(&w, PAIE)
            && e_reaches(&w, RH)));
    });

    step("two users vanish: once confirmed, the pass is held", || {
        // In one ldapmodify: deleted one by one, a pass may fall between the two and confirm
        // each absence in a different pass, each under the limit.
        w.slapd.delete_users(&VANISHED);
        // Three passes confirm the absence; the third would suspend 12 > 10 devices.
        assert!(
            wait_for(SYNC * 10, || !held_events(&w).is_empty()),
            "no directory.sync_held; log:\n{}",
            w.log_text()
        );
    });

    step(
        "D is disabled and E leaves gestionnaires-paie: applied within one pass",
        || {
            w.slapd.disable_user("mdupont");
            w.slapd.remove_from_group("sbernard", "gestionnaires-paie");
            // One pass is SYNC; allow the pass in flight, the next one and the probe itself.
            let cut = w.until_reach(PAIE, false, SYNC * 3);
            assert!(
                cut.is_some(),
                "D still reaches payroll; log:\n{}",
                w.log_text()
            );
            assert!(
                wait_for(SYNC * 3, || !e_reaches(&w, PAIE)),
                "E still reaches payroll"
            );
            assert!(e_reaches(&w, RH), "E lost HR too");
            eprintln!("D cut from payroll after {cut:?} (sync_interval {SYNC:?})");
        },
    );

    step("the vanished users' devices wait, still active", || {
        let (st, v) = api(
            "GET",
            "/api/v1/devices?status=active",
            None,
            Some(&it_jar),
            None,
        );
        assert_eq!(st, 200, "{v}");
        let active = v.as_array().unwrap();
        for u in VANISHED {
            let n = active.iter().filter(|d| d["username"] == u).count();
            assert_eq!(n, 6, "{u}: {v}");
        }
        assert!(!active.iter().any(|d| d["username"] == "mdupont"));
    });

    step(
        "directory.sync_held names D and E as applied, the vanished as waiting",
        || {
            let events = held_events(&w);
            let applied = events.iter().find(|e| {
                let a = names(&e["details"]["applied"]);
                a.contains(&"mdupont".to_string()) && a.contains(&"sbernard".to_string())
            });
            let applied = applied.unwrap_or_else(|| panic!("{events:#?}"));
            let mut waiting = names(&applied["details"]["waiting"]);
            waiting.sort();
            assert_eq!(waiting, VANISHED);
        },
    );
}
