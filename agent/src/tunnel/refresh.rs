//! Periodic `GET /api/v1/device/config`: route changes applied live, revocation noticed.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sesame::api::{codes, DeviceConfig};

use super::{log, peers, route, Shared, STOP};
use crate::enrol::{load_conf, API_TIMEOUT};
use crate::i18n::Lang;
use crate::portal::Portal;
use crate::state::{self, AgentState, Paths};
use crate::status::now_unix;
use crate::wgconf::{parse_networks, WgConf};

pub fn spawn(
    paths: Paths,
    agent: AgentState,
    interface: String,
    refresh_secs: Option<u64>,
    shared: Arc<Mutex<Shared>>,
    lang: Lang,
) -> JoinHandle<()> {
    let every = Duration::from_secs(refresh_secs.unwrap_or(agent.refresh_interval_secs).max(1));
    std::thread::spawn(move || {
        let portal = match Portal::new(
            &agent.portal,
            agent.ca_file.as_deref(),
            agent.insecure,
            API_TIMEOUT.min(every * 2),
            lang,
        ) {
            Ok(portal) => portal,
            Err(err) => {
                log(&format!("refresh disabled: {err}"));
                return;
            }
        };
        let mut last = Instant::now();
        let mut first = true;
        while !STOP.load(Ordering::SeqCst) {
            if first || last.elapsed() >= every {
                first = false;
                last = Instant::now();
                // The token may have changed with a rotation: read it again each time.
                let token = AgentState::load(&paths)
                    .map(|a| a.device_token)
                    .unwrap_or(agent.device_token.clone());
                refresh_once(&paths, &portal, &token, &interface, &shared);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

fn refresh_once(
    paths: &Paths,
    portal: &Portal,
    token: &str,
    interface: &str,
    shared: &Mutex<Shared>,
) {
    match portal.device_config(token) {
        Ok(device) => {
            if let Err(err) = apply(paths, &device, interface, shared) {
                log(&format!("refresh: {err}"));
            }
        }
        Err(err) => {
            let revoked = err.code() == Some(codes::DEVICE_REVOKED);
            if revoked {
                log("the portal says this device is revoked");
            }
            if let Ok(mut s) = shared.lock() {
                s.revoked |= revoked;
                s.refresh_error = Some(err.to_string());
            }
        }
    }
}

fn apply(
    paths: &Paths,
    device: &DeviceConfig,
    interface: &str,
    shared: &Mutex<Shared>,
) -> Result<(), String> {
    let grants = parse_networks(&device.allowed_ips)
        .map_err(|bad| format!("bad network {bad:?} from the portal"))?;
    let (current, known) = shared
        .lock()
        .map(|s| (s.routes.clone(), s.peers.clone()))
        .unwrap_or_default();
    let (specs, unresolved) = peers::after_refresh(device, &known, &grants)?;
    for endpoint in unresolved {
        log(&format!(
            "refresh: cannot resolve the site gateway {endpoint}"
        ));
    }
    let endpoints: Vec<IpAddr> = specs.iter().map(|p| p.addr.ip()).collect();
    let wanted = route::routable(&peers::union(&specs), &endpoints);
    // The peers are published before the routes change (the engine takes them at its next
    // turn, within 100 ms): a new site's first packets rarely go to the main gateway instead.
    if let Ok(mut s) = shared.lock() {
        if s.peers != specs {
            s.peers = specs;
            s.generation += 1;
        }
    }
    let diff = RouteDiff::between(&current, &wanted);
    let mut installed = diff.keep;
    for net in &diff.add {
        match route::add(interface, net) {
            Ok(()) => installed.push(*net),
            Err(err) => log(&format!("route {net}: {err}")),
        }
    }
    for net in &diff.remove {
        if let Err(err) = route::del(interface, net) {
            log(&format!("route {net}: {err}"));
        }
    }
    if installed != current {
        log(&format!("grants changed: routes now {installed:?}"));
    }
    if let Ok(mut s) = shared.lock() {
        s.routes = installed;
        s.revoked = false;
        s.last_refresh_at = Some(now_unix());
        s.refresh_error = None;
    }
    // Keep sesame.conf and the cache in line with the grants and the sites (the key, the
    // address, the MTU and the keepalive are left as they are).
    let _lock = crate::files::lock_dir(&paths.dir).map_err(|e| e.to_string())?;
    if let Ok(conf) = load_conf(&paths.conf()) {
        let mut fresh = if device.peers.len() >= 2 || !conf.sites.is_empty() {
            WgConf::from_device(conf.private_key.clone(), device).map_err(|e| e.to_string())?
        } else {
            // One site: the gateway as it was written (as before sites existed).
            let mut same = conf.clone();
            same.allowed_ips = grants;
            same.dns = device.dns.clone();
            same
        };
        fresh.address = conf.address;
        fresh.mtu = conf.mtu;
        fresh.keepalive = conf.keepalive;
        if fresh.render() != conf.render() {
            crate::files::write_private_atomic(&paths.conf(), fresh.render().as_bytes())
                .map_err(|e| e.to_string())?;
        }
    }
    state::save_device_cache(paths, device).map_err(|e| e.to_string())
}

/// What changes between the installed routes and the wanted ones: routes kept are not touched,
/// so traffic to a resource still granted never pauses.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteDiff {
    pub keep: Vec<IpNet>,
    pub add: Vec<IpNet>,
    pub remove: Vec<IpNet>,
}

impl RouteDiff {
    pub fn between(current: &[IpNet], wanted: &[IpNet]) -> RouteDiff {
        RouteDiff {
            keep: current
                .iter()
                .filter(|n| wanted.contains(n))
                .copied()
                .collect(),
            add: wanted
                .iter()
                .filter(|n| !current.contains(n))
                .copied()
                .collect(),
            remove: current
                .iter()
                .filter(|n| !wanted.contains(n))
                .copied()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    #[test]
    fn diff_keeps_unchanged_routes_and_lists_changes() {
        let current = nets(&["198.18.10.10/32", "198.18.20.0/24"]);
        let wanted = nets(&["198.18.10.10/32", "198.18.30.0/24"]);
        assert_eq!(
            RouteDiff::between(&current, &wanted),
            RouteDiff {
                keep: nets(&["198.18.10.10/32"]),
                add: nets(&["198.18.30.0/24"]),
                remove: nets(&["198.18.20.0/24"]),
            }
        );
        let same = RouteDiff::between(&current, &current);
        assert!(same.add.is_empty() && same.remove.is_empty());
        let none = RouteDiff::between(&current, &[]);
        assert_eq!(none.remove, current, "no grant left: every route goes");
    }
}
