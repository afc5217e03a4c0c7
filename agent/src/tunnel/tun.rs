//! The laptop's TUN device, opened through the shared fast path (offloads when the kernel has them); closing it removes the interface.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use sesame::fastpath::tun::{self, Offloads};

pub struct Tun {
    fd: OwnedFd,
    pub name: String,
    /// The MTU the interface is given (sizes the datagram buffers).
    pub mtu: u16,
    /// What the kernel accepted (virtio_net_hdr, TSO, USO).
    pub offloads: Offloads,
}

impl Tun {
    /// Creates the interface `name` (at most 15 bytes), one queue, with offloads; `mtu` is
    /// the MTU the caller then configures on it.
    pub fn open(name: &str, mtu: u16) -> io::Result<Tun> {
        let (mut fds, offloads) = tun::open(name, 1, true)?;
        let fd = fds
            .pop()
            .ok_or_else(|| io::Error::other("no TUN queue opened"))?;
        Ok(Tun {
            fd,
            name: name.to_string(),
            mtu,
            offloads,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
