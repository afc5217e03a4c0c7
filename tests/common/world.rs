//! The network of the end-to-end tests: a gateway namespace, laptop namespaces linked to it, and
//! the resource hosts (payroll, HR) behind it with their TCP servers; plus the gateway key.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use super::netns::{link, wait_for, Netns, Proc};

/// The gateway's WireGuard port on every underlay link.
pub const GW_PORT: u16 = 51820;
/// The payroll host (resource `paie`).
pub const PAIE: &str = "198.18.10.10";
/// The HR host (resource `rh`).
pub const RH: &str = "198.18.20.10";
/// The application port both hosts listen on.
pub const APP_PORT: u16 = 8443;
/// The resource hosts' side of their link; the gateway is `198.18.3.1`.
const RES_LINK: &str = "198.18.3.2";

/// The TCP servers of the internal hosts (`bulk.py serve ADDR…`).
pub const BULK: &str = include_str!("bulk.py");

/// Namespaces, deleted (with their processes) on Drop: laptop `i` is `198.18.{i+1}.2`, linked
/// to the gateway's `198.18.{i+1}.1`; the resource hosts answer for `PAIE` and `RH` on
/// `198.18.3.2` and route the tunnel network back through the gateway.
pub struct Topology {
    pub gw: Netns,
    pub laptops: Vec<Netns>,
    pub res: Netns,
}

impl Topology {
    /// `laptops` (1 or 2) laptop namespaces; names start with `prefix` (2 letters) and a role
    /// letter: g(ateway), l/m (laptops), r(esources).
    pub fn new(prefix: &str, laptops: usize) -> Topology {
        assert!(
            (1..=2).contains(&laptops),
            "198.18.3.0/30 is the resource link"
        );
        let gw = Netns::new(&format!("{prefix}g"));
        let laptops: Vec<Netns> = (0..laptops)
            .map(|i| {
                let ns = Netns::new(&format!("{prefix}{}", ["l", "m"][i]));
                link(
                    &gw,
                    &format!("198.18.{}.1/30", i + 1),
                    &ns,
                    &format!("198.18.{}.2/30", i + 1),
                );
                ns
            })
            .collect();
        let res = Netns::new(&format!("{prefix}r"));
        let (_, res_if) = link(&gw, "198.18.3.1/30", &res, &format!("{RES_LINK}/30"));
        for host in [PAIE, RH] {
            res.ip(&["addr", "add", &format!("{host}/32"), "dev", &res_if]);
            gw.ip(&["route", "add", &format!("{host}/32"), "via", RES_LINK]);
        }
        res.ip(&["route", "add", "100.64.0.0/10", "via", "198.18.3.1"]);
        gw.sysctl("net.ipv4.ip_forward", "1");
        Topology { gw, laptops, res }
    }

    /// The gateway's WireGuard endpoint as laptop `i` dials it.
    pub fn endpoint(i: usize) -> String {
        format!("198.18.{}.1:{GW_PORT}", i + 1)
    }
}

/// `bulk.py serve` on `addrs` (`ip:port`) inside `ns`, ready when this returns; its log is
/// `dir/NAME.log`.
pub fn tcp_servers(ns: &Netns, dir: &Path, name: &str, addrs: &[&str]) -> Proc {
    let script = dir.join("bulk.py");
    std::fs::write(&script, BULK).expect("write bulk.py");
    let log = dir.join(format!("{name}.log"));
    let mut args = vec![script.to_str().expect("utf-8 path"), "serve"];
    args.extend_from_slice(addrs);
    let proc = ns.spawn("python3", &args, Some(&log));
    assert!(
        wait_for(Duration::from_secs(30), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")),
        "TCP servers did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    proc
}

/// The payroll and HR application servers (`PAIE:APP_PORT`, `RH:APP_PORT`) on the resource hosts.
pub fn app_servers(t: &Topology, dir: &Path) -> Proc {
    tcp_servers(
        &t.res,
        dir,
        "res-listener",
        &[&format!("{PAIE}:{APP_PORT}"), &format!("{RH}:{APP_PORT}")],
    )
}

/// A new gateway key written by `sesame keygen --out PATH` (mode 0600); its public key.
pub fn keygen(path: &Path) -> String {
    let out = super::cli::sesame(&["keygen", "--out", path.to_str().expect("utf-8 path")]).ok();
    out.trim().to_string()
}
