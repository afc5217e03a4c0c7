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

/// `SOL_UDP` options (linux/udp.h; not in libc for every target).
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// A control buffer for one UDP_SEGMENT message (8-aligned, ≥ `CMSG_SPACE(2)`).
pub type SegmentCmsg = [u64; 4];

/// Makes `h` a UDP GSO send: its datagrams are `size` bytes each (the last may be shorter),
/// announced in a UDP_SEGMENT control message written to `ctrl`, which must outlive the send.
pub fn set_segment_size(h: &mut libc::msghdr, ctrl: &mut SegmentCmsg, size: u16) {
    h.msg_control = ctrl.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
    // SAFETY: `ctrl` holds 32 bytes ≥ CMSG_SPACE(2), 8-aligned, so the first header and its
    // two data bytes lie inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(h);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
    }
}
/// Most datagrams in one GSO send (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Largest GRO receive.
pub const GSO_MAX_BYTES: usize = 65_535;
/// Largest payload of one GSO send: the IP length field less the IPv6 and UDP headers.
const GSO_MAX_PAYLOAD: usize = GSO_MAX_BYTES - 48;
/// Control buffer per message: one cmsg carrying a u16 (send) or an int (receive).
const CTRL: usize = 32;

/// What the kernel accepted on a UDP socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpOffloads {
    /// UDP_SEGMENT: one send carries many datagrams of one size.
    pub gso: bool,
    /// UDP_GRO: one receive may carry many datagrams of one size.
    pub gro: bool,
}

/// Turns on UDP GRO and checks for UDP GSO; each one is off when the kernel refuses it.
pub fn enable_offloads(fd: RawFd) -> UdpOffloads {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt/getsockopt with c_int values of the right size.
    let gro = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    };
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above.
    let gso = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        ) == 0
    };
    UdpOffloads { gso, gro }
}

/// Preallocated buffers for one recvmmsg or sendmmsg call: nothing allocated per packet.
/// On the send side consecutive datagrams to one destination go out as one UDP GSO send;
/// on the receive side one message may hold several datagrams (UDP GRO).
pub struct Batch {
    /// Bytes per message buffer.
    slot: usize,
    /// Largest datagram accepted.
    max: usize,
    /// Send with UDP_SEGMENT (cleared if the kernel refuses it at send time).
    gso: bool,
    bufs: Vec<u8>,
    /// Length of each message (`> slot` when the kernel truncated it).
    pub lens: [usize; BATCH],
    /// GRO segment size of each received message (0: one datagram).
    segs: [usize; BATCH],
    dsts: [Option<SocketAddr>; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    addr_lens: [libc::socklen_t; BATCH],
    iovs: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
    ctrl: [[u64; CTRL / 8]; BATCH],
    /// For each prepared send message: its first datagram and how many it carries.
    first: [usize; BATCH],
    count: [usize; BATCH],
    /// Queued datagrams (send side) or received messages (receive side).
    pub len: usize,
}

impl Batch {
    /// Writes the message buffers once, so that their pages are resident from the start: the
    /// gateway's RSS then says what it holds before traffic, rather than growing by up to
    /// `BATCH` × 64 KiB per batch as the first coalesced receives fault them in (which per-peer
    /// memory figures would count against the first peers to send).
    pub fn prefault(&mut self) {
        std::hint::black_box(&mut self.bufs[..]).fill(0);
    }

    /// Buffers for datagrams of at most `max` bytes, without offloads.
    pub fn new(max: usize) -> Box<Batch> {
        Batch::with_offloads(max, UdpOffloads::default())
    }

    /// Buffers for datagrams of at most `max` bytes; with GRO each message buffer holds a
    /// whole coalesced receive (64 KiB).
    pub fn with_offloads(max: usize, offloads: UdpOffloads) -> Box<Batch> {
        let slot = if offloads.gro {
            GSO_MAX_BYTES.max(max)
        } else {
            max
        };
        // SAFETY: all-zero is a valid value for these plain C structs (null pointers are
        // filled in before every call).
        let zeroed = unsafe { mem::zeroed::<[libc::sockaddr_storage; BATCH]>() };
        Box::new(Batch {
            slot,
            max,
            gso: offloads.gso,
            bufs: vec![0; slot * BATCH],
            lens: [0; BATCH],
            segs: [0; BATCH],
            dsts: [None; BATCH],
            addrs: zeroed,
            addr_lens: [0; BATCH],
            // SAFETY: as above.
            iovs: unsafe { mem::zeroed() },
            // SAFETY: as above.
            hdrs: unsafe { mem::zeroed() },
            ctrl: [[0; CTRL / 8]; BATCH],
            first: [0; BATCH],
            count: [0; BATCH],
            len: 0,
        })
    }

    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// Whether sends still use UDP GSO.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// The received datagrams with their source, GRO messages split at their segment size.
    /// Truncated messages are skipped (see [`Batch::truncated`]).
    pub fn datagrams(&self) -> Datagrams<'_> {
        Datagrams {
            batch: self,
            msg: 0,
            off: 0,
        }
    }

    /// Received messages the kernel truncated (larger than a buffer): to count as malformed.
    pub fn truncated(&self) -> usize {
        self.lens[..self.len]
            .iter()
            .zip(&self.segs[..self.len])
            .filter(|&(&l, &seg)| l > self.slot || (seg == 0 && l > self.max))
            .count()
    }

    /// Queues a datagram to send (caller flushes when full). Returns false if it does not fit.
    pub fn push(&mut self, dst: SocketAddr, data: &[u8]) -> bool {
        data.len() <= self.slot.min(self.max)
            && self.push_with(dst, |slot| {
                slot[..data.len()].copy_from_slice(data);
                Some(data.len())
            })
    }

    /// Queues a datagram for `dst` that `fill` writes in place into the next free buffer (of
    /// at least [`Batch::max`] bytes) and whose length it returns; `None` queues nothing.
    /// Returns false when the batch is full or `fill` declined. Encryption writes straight
    /// into the batch this way, without a copy from a scratch buffer.
    pub fn push_with(
        &mut self,
        dst: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        if self.len == BATCH {
            return false;
        }
        let i = self.len;
        let start = i * self.slot;
        let room = self.slot.min(self.max);
        let Some(n) = fill(&mut self.bufs[start..start + room]).filter(|&n| n <= room) else {
            return false;
        };
        self.lens[i] = n;
        if self.dsts[i] != Some(dst) {
            self.addr_lens[i] = to_sockaddr(dst, &mut self.addrs[i]);
            self.dsts[i] = Some(dst);
        }
        self.len += 1;
        true
    }

    /// The largest datagram a send batch takes.
    pub fn max(&self) -> usize {
        self.max
    }

    fn prepare_recv(&mut self) {
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: i * slot is within `bufs` (BATCH slots).
            let ptr = unsafe { base.add(i * self.slot) };
            self.iovs[i] = libc::iovec {
                iov_base: ptr.cast(),
                iov_len: self.slot,
            };
            // SAFETY: zeroed msghdr is valid; we set the fields we use.
            let mut h: libc::msghdr = unsafe { mem::zeroed() };
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = CTRL as _;
            self.hdrs[i] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }
        // The addresses are overwritten: the send-side cache is void.
        self.dsts = [None; BATCH];
    }

    /// Groups the queued datagrams from `from` on into send messages; returns how many.
    /// With GSO, a run of datagrams to one destination, all of the first one's size but a
    /// shorter last one, goes in one message with a UDP_SEGMENT cmsg.
    fn prepare_send(&mut self, from: usize) -> usize {
        let base = self.bufs.as_mut_ptr();
        for i in from..self.len {
            // SAFETY: i * slot is within `bufs` (BATCH slots).
            let ptr = unsafe { base.add(i * self.slot) };
            self.iovs[i] = libc::iovec {
                iov_base: ptr.cast(),
                iov_len: self.lens[i],
            };
        }
        let mut m = 0;
        let mut i = from;
        while i < self.len {
            let size = self.lens[i];
            let mut j = i + 1;
            let mut total = size;
            if self.gso {
                while j < self.len
                    && j - i < GSO_MAX_SEGMENTS
                    && self.dsts[j] == self.dsts[i]
                    && self.lens[j] <= size
                    && total + self.lens[j] <= GSO_MAX_PAYLOAD
                {
                    total += self.lens[j];
                    j += 1;
                    if self.lens[j - 1] < size {
                        break;
                    }
                }
            }
            // SAFETY: zeroed msghdr is valid; we set the fields we use.
            let mut h: libc::msghdr = unsafe { mem::zeroed() };
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = self.addr_lens[i];
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = (j - i) as _;
            if j - i > 1 {
                set_segment_size(&mut h, &mut self.ctrl[m], size as u16);
            }
            self.hdrs[m] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
            self.first[m] = i;
            self.count[m] = j - i;
            m += 1;
            i = j;
        }
        m
    }

    /// Receives up to BATCH messages without blocking; returns how many (0 if none).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.prepare_recv();
        // SAFETY: hdrs/iovs/addrs/bufs/ctrl are valid for BATCH entries for the call's duration.
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
            let h = &self.hdrs[i].msg_hdr;
            let truncated = h.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = if truncated {
                self.slot + 1
            } else {
                self.hdrs[i].msg_len as usize
            };
            self.segs[i] = gro_size(h);
        }
        self.len = n;
        Ok(n)
    }

    /// Sends every queued datagram; returns how many could not be sent. If the kernel
    /// refuses a GSO send (EIO: no checksum offload on the route), GSO is turned off for
    /// this batch's future and the rest goes out one datagram per message.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let mut failed = 0;
        let mut from = 0;
        'groups: while from < self.len {
            let msgs = self.prepare_send(from);
            let mut sent = 0;
            while sent < msgs {
                // SAFETY: entries sent..msgs were prepared above and stay valid.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.hdrs.as_mut_ptr().add(sent),
                        (msgs - sent) as libc::c_uint,
                        0,
                    )
                };
                if n > 0 {
                    sent += n as usize;
                    continue;
                }
                let e = io::Error::last_os_error();
                if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if self.gso && self.count[sent] > 1 && e.raw_os_error() == Some(libc::EIO) {
                    self.gso = false;
                    from = self.first[sent];
                    continue 'groups;
                }
                // Skip the message that failed (e.g. unreachable) and go on with the rest.
                failed += self.count[sent];
                sent += 1;
            }
            break;
        }
        self.len = 0;
        failed
    }
}

/// The UDP_GRO segment size in a received message's control data (0 if none).
fn gro_size(h: &libc::msghdr) -> usize {
    if h.msg_controllen == 0 || h.msg_control.is_null() {
        return 0;
    }
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs; the CMSG
    // macros stay within them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    0
}

/// Iterator over the datagrams of a received [`Batch`].
pub struct Datagrams<'a> {
    batch: &'a Batch,
    msg: usize,
    off: usize,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = (Option<SocketAddr>, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.batch;
        while self.msg < b.len {
            let len = b.lens[self.msg];
            let seg = b.segs[self.msg];
            if len > b.slot || (seg == 0 && len > b.max) {
                self.msg += 1;
                self.off = 0;
                continue;
            }
            let step = if seg == 0 { len } else { seg };
            let start = self.msg * b.slot;
            let end = (self.off + step).min(len);
            let data = &b.bufs[start + self.off..start + end];
            let from = from_sockaddr(&b.addrs[self.msg]);
            self.off = end;
            if self.off >= len {
                self.msg += 1;
                self.off = 0;
            }
            return Some((from, data));
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "udp_tests.rs"]
mod tests;
