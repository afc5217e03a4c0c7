//! The TUN device: multiqueue open with offloads (one queue per worker), address/MTU/up via `ip`.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::process::Command;

pub use crate::fastpath::tun::Offloads;

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("interface name {0:?} must be 1 to 15 characters")]
    BadName(String),
    #[error(
        "cannot create TUN device {name}: {source} (the gateway needs root or CAP_NET_ADMIN, and /dev/net/tun)"
    )]
    Open { name: String, source: io::Error },
    #[error("cannot configure interface {name} with `ip {args}`: {detail}")]
    Configure {
        name: String,
        args: String,
        detail: String,
    },
}

/// Opens `queues` queues of the TUN device `name` (created if needed, removed when the
/// last queue closes), non-blocking, with the offloads the kernel accepts.
pub fn open(name: &str, queues: usize) -> Result<(Vec<OwnedFd>, Offloads), TunError> {
    if name.is_empty() || name.len() > 15 || name.contains('\0') {
        return Err(TunError::BadName(name.to_string()));
    }
    crate::fastpath::tun::open(name, queues.max(1), true).map_err(|source| TunError::Open {
        name: name.to_string(),
        source,
    })
}

fn ip(name: &str, args: &[&str]) -> Result<(), TunError> {
    let fail = |detail: String| TunError::Configure {
        name: name.to_string(),
        args: args.join(" "),
        detail,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Gives the interface its address and MTU and brings it up.
pub fn configure(name: &str, address: Ipv4Addr, prefix: u8, mtu: u16) -> Result<(), TunError> {
    let cidr = format!("{address}/{prefix}");
    // Idempotent across restarts: `replace` tolerates an address already present.
    ip(name, &["addr", "replace", &cidr, "dev", name])?;
    ip(
        name,
        &["link", "set", "dev", name, "mtu", &mtu.to_string(), "up"],
    )?;
    Ok(())
}
