//! The TUN device: multiqueue open via TUNSETIFF (one queue per worker), address/MTU/up via `ip`.

use std::ffi::c_char;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::process::Command;

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

#[repr(C)]
struct IfReq {
    name: [c_char; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `queues` queues of the TUN device `name` (created if needed, removed when the
/// last queue closes). Queues are non-blocking.
pub fn open(name: &str, queues: usize) -> Result<Vec<OwnedFd>, TunError> {
    if name.is_empty() || name.len() > 15 || name.contains('\0') {
        return Err(TunError::BadName(name.to_string()));
    }
    let err = |source| TunError::Open {
        name: name.to_string(),
        source,
    };
    let mut fds = Vec::with_capacity(queues);
    for _ in 0..queues.max(1) {
        // SAFETY: plain open(2) of a constant NUL-terminated path.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; 16],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as libc::c_short,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(name.bytes()) {
            *d = s as c_char;
        }
        // SAFETY: TUNSETIFF reads/writes an ifreq-sized struct we own.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        fds.push(fd);
    }
    Ok(fds)
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

/// Reads one packet; `Ok(None)` when the queue is empty.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: reading into a buffer we own, within its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(n as usize))
}

pub fn write(fd: RawFd, packet: &[u8]) -> io::Result<()> {
    // SAFETY: writing from a buffer we own, within its length.
    let n = unsafe { libc::write(fd, packet.as_ptr().cast(), packet.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
