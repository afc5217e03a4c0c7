//! The UDP side: one SO_REUSEPORT socket per worker, large forced buffers, recvmmsg/sendmmsg batches.

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Datagrams per recvmmsg/sendmmsg call.
pub const BATCH: usize = 32;
/// Socket buffer size asked for (wireguard-go and Linux WireGuard use about this).
pub const SOCKET_BUFFER: usize = 7 << 20;
// Not exported by libc for every Linux target; these are the asm-generic values.
const SO_SNDBUFFORCE: libc::c_int = 32;
const SO_RCVBUFFORCE: libc::c_int = 33;

/// Binds one socket of the reuseport group on `addr`. Blocking for sends (backpressure
/// instead of loss); receives use MSG_DONTWAIT.
pub fn bind(addr: SocketAddr) -> io::Result<OwnedFd> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    force_buffer(&socket, SO_RCVBUFFORCE, libc::SO_RCVBUF);
    force_buffer(&socket, SO_SNDBUFFORCE, libc::SO_SNDBUF);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// SO_*BUFFORCE needs CAP_NET_ADMIN; without it, fall back to what rmem_max allows.
fn force_buffer(socket: &Socket, force: libc::c_int, plain: libc::c_int) {
    let size = SOCKET_BUFFER as libc::c_int;
    for opt in [force, plain] {
        // SAFETY: setsockopt with a c_int value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

pub fn to_sockaddr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let s: socket2::SockAddr = addr.into();
    let len = s.len() as usize;
    // SAFETY: both are plain bytes; socket2's storage holds `len` valid bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            s.as_ptr() as *const u8,
            (storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        );
    }
    len as libc::socklen_t
}

pub fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let a: &libc::sockaddr_in =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let v6 = SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            );
            // Dual-stack sockets report IPv4 peers as v4-mapped.
            Some(match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
                None => SocketAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// Preallocated buffers for one recvmmsg or sendmmsg call: nothing allocated per packet.
pub struct Batch {
    slot: usize,
    bufs: Vec<u8>,
    pub lens: [usize; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    addr_lens: [libc::socklen_t; BATCH],
    iovs: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
    /// Queued datagrams (send side) or received ones (receive side).
    pub len: usize,
}

impl Batch {
    pub fn new(slot: usize) -> Box<Batch> {
        // SAFETY: all-zero is a valid value for these plain C structs (null pointers are
        // filled in before every call).
        let zeroed = unsafe { mem::zeroed::<[libc::sockaddr_storage; BATCH]>() };
        Box::new(Batch {
            slot,
            bufs: vec![0; slot * BATCH],
            lens: [0; BATCH],
            addrs: zeroed,
            addr_lens: [0; BATCH],
            // SAFETY: as above.
            iovs: unsafe { mem::zeroed() },
            // SAFETY: as above.
            hdrs: unsafe { mem::zeroed() },
            len: 0,
        })
    }

    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// Datagram `i` of a received batch, with its source.
    pub fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        let start = i * self.slot;
        (
            from_sockaddr(&self.addrs[i]),
            &self.bufs[start..start + self.lens[i].min(self.slot)],
        )
    }

    /// Queues a datagram to send (caller flushes when full). Returns false if it does not fit.
    pub fn push(&mut self, dst: SocketAddr, data: &[u8]) -> bool {
        if self.len == BATCH || data.len() > self.slot {
            return false;
        }
        let i = self.len;
        let start = i * self.slot;
        self.bufs[start..start + data.len()].copy_from_slice(data);
        self.lens[i] = data.len();
        self.addr_lens[i] = to_sockaddr(dst, &mut self.addrs[i]);
        self.len += 1;
        true
    }

    fn prepare(&mut self, count: usize, receiving: bool) {
        let base = self.bufs.as_mut_ptr();
        for i in 0..count {
            // SAFETY: i * slot is within `bufs` (BATCH slots).
            let ptr = unsafe { base.add(i * self.slot) };
            self.iovs[i] = libc::iovec {
                iov_base: ptr.cast(),
                iov_len: if receiving { self.slot } else { self.lens[i] },
            };
            // SAFETY: zeroed msghdr is valid; we set the fields we use.
            let mut h: libc::msghdr = unsafe { mem::zeroed() };
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = if receiving {
                mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
            } else {
                self.addr_lens[i]
            };
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            self.hdrs[i] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }
    }

    /// Receives up to BATCH datagrams without blocking; returns how many (0 if none).
    /// A datagram larger than a slot comes back with `lens[i] > slot` (truncated: drop it).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.prepare(BATCH, true);
        // SAFETY: hdrs/iovs/addrs/bufs are valid for BATCH entries for the call's duration.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.len = 0;
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        let n = n as usize;
        for i in 0..n {
            let truncated = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = if truncated {
                self.slot + 1
            } else {
                self.hdrs[i].msg_len as usize
            };
        }
        self.len = n;
        Ok(n)
    }

    /// Sends every queued datagram; returns how many could not be sent.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let total = self.len;
        if total == 0 {
            return 0;
        }
        self.prepare(total, false);
        let mut sent = 0;
        while sent < total {
            // SAFETY: entries sent..total were prepared above and stay valid.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(sent),
                    (total - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed (e.g. unreachable) and go on with the rest.
                sent += 1;
                self.len = 0;
                let failed = 1 + self.flush_rest(fd, sent, total);
                return failed;
            }
            sent += n as usize;
        }
        self.len = 0;
        0
    }

    fn flush_rest(&mut self, fd: RawFd, mut sent: usize, total: usize) -> usize {
        let mut failed = 0;
        while sent < total {
            // SAFETY: as in `flush`.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(sent),
                    (total - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                failed += 1;
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
        failed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_on_loopback() {
        let a = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let sock_a = Socket::from(a);
        let a_addr = sock_a.local_addr().unwrap().as_socket().unwrap();
        let b = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b_addr = Socket::from(b.try_clone().unwrap())
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap();
        let mut out = Batch::new(2048);
        for i in 0..5u8 {
            assert!(out.push(a_addr, &[i; 100]));
        }
        assert_eq!(out.flush(b.as_raw_fd()), 0);
        let mut inb = Batch::new(2048);
        let mut got = 0;
        for _ in 0..100 {
            got += inb.recv(sock_a.as_raw_fd()).unwrap();
            if got == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 5);
        let (from, data) = inb.get(0);
        assert_eq!(from, Some(b_addr));
        assert_eq!(data.len(), 100);
    }
}
