//! Interface address, link state and routes, through iproute2's `ip` command.

use std::net::Ipv4Addr;
use std::process::Command;

use ipnet::{IpNet, Ipv4Net};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot run `ip`: {0} (install iproute2)")]
    Spawn(std::io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

pub fn ip(args: &[&str]) -> Result<(), RouteError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(RouteError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(RouteError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Gives `iface` its tunnel address and MTU and brings it up.
pub fn configure(iface: &str, address: Ipv4Addr, mtu: u16) -> Result<(), RouteError> {
    let addr = Ipv4Net::from(address).to_string();
    ip(&["address", "replace", &addr, "dev", iface])?;
    ip(&["link", "set", "dev", iface, "mtu", &mtu.to_string(), "up"])
}

pub fn add(iface: &str, net: &IpNet) -> Result<(), RouteError> {
    ip(&["route", "replace", &net.to_string(), "dev", iface])
}

pub fn del(iface: &str, net: &IpNet) -> Result<(), RouteError> {
    ip(&["route", "del", &net.to_string(), "dev", iface])
}

pub fn link_exists(iface: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", iface])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn delete_link(iface: &str) -> Result<(), RouteError> {
    ip(&["link", "delete", "dev", iface])
}

/// Networks to route: the grants, minus any that would swallow a gateway's own address
/// (that would loop the tunnel into itself).
pub fn routable(grants: &[IpNet], endpoints: &[std::net::IpAddr]) -> Vec<IpNet> {
    grants
        .iter()
        .filter(|net| !endpoints.iter().any(|e| net.contains(e)))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_covering_the_endpoint_is_not_routed() {
        let grants: Vec<IpNet> = vec![
            "198.18.10.0/24".parse().expect("net"),
            "198.18.0.0/16".parse().expect("net"),
        ];
        let routed = routable(&grants, &["198.18.0.1".parse().expect("ip")]);
        assert_eq!(
            routed,
            vec!["198.18.10.0/24".parse::<IpNet>().expect("net")]
        );
    }
}
