//! The syscalls the bench tools batch: UDP with big buffers and sendmmsg/recvmmsg, TUN, netns, RSS.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use anyhow::{bail, Context as _};
use sesame::fastpath::udp::{set_segment_size, SegmentCmsg};

/// Most datagrams one sendmmsg/recvmmsg call moves.
pub const BATCH: usize = 64;

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a valid pointer to an int of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A UDP socket bound to `bind`, connected to `peer`, with ~7 MB buffers forced (as root).
pub fn udp(bind: SocketAddr, peer: SocketAddr, timeout: Duration) -> anyhow::Result<UdpSocket> {
    let s = UdpSocket::bind(bind).with_context(|| format!("binding UDP {bind}"))?;
    s.connect(peer)
        .with_context(|| format!("connecting UDP to {peer}"))?;
    let fd = s.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, 7 << 20).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, 7 << 20)?;
        }
    }
    s.set_read_timeout(Some(timeout))?;
    Ok(s)
}

/// Sends every slice as one datagram on a connected socket, `BATCH` per syscall.
/// Returns how many were sent (fewer only if the socket reports an error other than ENOBUFS).
pub fn send_all(fd: RawFd, packets: &[&[u8]]) -> usize {
    let mut sent = 0;
    while sent < packets.len() {
        let chunk = &packets[sent..(sent + BATCH).min(packets.len())];
        // SAFETY: iovec/mmsghdr are plain C structs; all-zero is a valid value.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdr: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, p) in chunk.iter().enumerate() {
            iov[i].iov_base = p.as_ptr() as *mut libc::c_void;
            iov[i].iov_len = p.len();
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: hdr[..chunk.len()] point at live iovecs that point at live slices.
        let n = unsafe { libc::sendmmsg(fd, hdr.as_mut_ptr(), chunk.len() as u32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                // The peer's port is not open (yet): the datagram is gone, move on.
                Some(libc::ECONNREFUSED) => {
                    sent += 1;
                    continue;
                }
                _ => return sent,
            }
        }
        sent += n as usize;
    }
    sent
}

/// CPU time of this thread: the machine is shared, and time spent descheduled is not the
/// measured code's cost.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// CPU time (user + system, all threads, exited ones included) of process `pid`, from
/// /proc/PID/stat in clock ticks: the same count `bench/run.sh` reads for the pair.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3, utime and stime fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("/proc/{pid}/stat has no command name"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        f.get(i - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat: field {i} missing"))
    };
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks() as f64))
}

/// Clock ticks per second of /proc/PID/stat's CPU times (`sysconf(_SC_CLK_TCK)`, at least 1).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    hz.max(1)
}

/// Messages per sendmmsg call in [`send_gso`].
const GSO_MSGS: usize = 16;
/// Most datagrams in one GSO message (the kernel's UDP_MAX_SEGMENTS on older kernels).
const GSO_SEGS: usize = 64;

/// Sends every slice as one datagram on a connected socket with UDP GSO, as an offloading
/// peer (a recent wireguard-go) does: runs of same-size datagrams go in one message with a
/// UDP_SEGMENT control message, [`GSO_MSGS`] messages per sendmmsg. Returns how many were
/// sent, or `None` when the kernel refuses UDP GSO before anything was sent.
pub fn send_gso(fd: RawFd, packets: &[&[u8]]) -> Option<usize> {
    // SAFETY: plain C structs; all-zero is a valid value (pointers are set before use).
    let mut iov: [libc::iovec; GSO_MSGS * GSO_SEGS] = unsafe { std::mem::zeroed() };
    let mut hdr: [libc::mmsghdr; GSO_MSGS] = unsafe { std::mem::zeroed() };
    let mut ctrl: [SegmentCmsg; GSO_MSGS] = [[0; 4]; GSO_MSGS];
    let mut segs = [0usize; GSO_MSGS];
    let mut sent = 0;
    while sent < packets.len() {
        // Group what is left into messages.
        let (mut m, mut at, mut k) = (0, sent, 0);
        while m < GSO_MSGS && at < packets.len() {
            let size = packets[at].len();
            let most = GSO_SEGS.min((65_507 / size.max(1)).max(1));
            let mut n = 0;
            while n < most && at + n < packets.len() && packets[at + n].len() == size {
                let p = packets[at + n];
                iov[k + n] = libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                };
                n += 1;
            }
            // SAFETY: zeroed msghdr is valid; the fields set point at live arrays.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_iov = &mut iov[k];
            h.msg_iovlen = n as _;
            if n > 1 {
                set_segment_size(&mut h, &mut ctrl[m], size as u16);
            }
            hdr[m] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
            segs[m] = n;
            m += 1;
            at += n;
            k += n;
        }
        // SAFETY: hdr[..m] point at live iovecs, control buffers and packets.
        let r = unsafe { libc::sendmmsg(fd, hdr.as_mut_ptr(), m as u32, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                Some(libc::ECONNREFUSED) => {
                    sent += segs[0];
                    continue;
                }
                Some(libc::EINVAL) | Some(libc::EIO) if sent == 0 => return None,
                _ => return Some(sent),
            }
        }
        sent += segs[..r as usize].iter().sum::<usize>();
    }
    Some(sent)
}

/// Receive buffers for recvmmsg: `BATCH` slots of `stride` bytes, allocated once.
pub struct RecvBatch {
    bufs: Vec<u8>,
    stride: usize,
    lens: [usize; BATCH],
    count: usize,
}

impl RecvBatch {
    pub fn new(stride: usize) -> RecvBatch {
        RecvBatch {
            bufs: vec![0; stride * BATCH],
            stride,
            lens: [0; BATCH],
            count: 0,
        }
    }

    /// Waits (up to the socket's read timeout) for at least one datagram, takes what is queued.
    /// Returns the number received (0 on timeout).
    pub fn recv(&mut self, fd: RawFd, wait: bool) -> usize {
        // SAFETY: as in send_all; the iovecs point into self.bufs, alive for the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdr: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: i * stride < bufs.len().
            iov[i].iov_base = unsafe { base.add(i * self.stride) }.cast();
            iov[i].iov_len = self.stride;
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
        }
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: hdr/iov valid as above.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdr.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        self.count = if n < 0 { 0 } else { n as usize };
        for (len, h) in self.lens.iter_mut().zip(&hdr).take(self.count) {
            *len = h.msg_len as usize;
        }
        self.count
    }

    /// Datagram `i` of the last receive.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.bufs[i * self.stride..i * self.stride + self.lens[i]]
    }
}

/// Waits until one of `fds` is readable; returns the readable flags (false on timeout).
pub fn poll_read<const N: usize>(fds: [RawFd; N], timeout: Duration) -> [bool; N] {
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: p is a valid array of pollfd.
    let n = unsafe {
        libc::poll(
            p.as_mut_ptr(),
            N as libc::nfds_t,
            timeout.as_millis() as i32,
        )
    };
    if n <= 0 {
        return [false; N];
    }
    p.map(|x| x.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
}

/// Moves the calling thread into network namespace `name` (created with `ip netns add`).
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    let f = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening network namespace {name}"))?;
    // SAFETY: setns on a valid netns fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).context(format!("entering namespace {name}"));
    }
    Ok(())
}

/// Received (packets, bytes) of interface `iface` as the calling thread's namespace sees it.
pub fn iface_rx(iface: &str) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == iface {
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() >= 2 {
                return Ok((f[1], f[0]));
            }
        }
    }
    bail!("interface {iface} not found")
}

/// `iface_rx` of an interface inside namespace `ns` (read from a short-lived thread).
pub fn netns_iface_rx(ns: &str, iface: &str) -> anyhow::Result<(u64, u64)> {
    let (ns, iface) = (ns.to_string(), iface.to_string());
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        iface_rx(&iface)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("counter thread panicked"))?
}

/// Resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Forces ~7 MB socket buffers (as root; the plain request otherwise).
pub fn force_buffers(s: &UdpSocket) -> anyhow::Result<()> {
    let fd = s.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, 7 << 20).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, 7 << 20)?;
        }
    }
    Ok(())
}

/// An unconnected UDP socket on `port` of every local address, with forced big buffers.
pub fn udp_any(port: u16, timeout: Duration) -> anyhow::Result<UdpSocket> {
    let s =
        UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("binding UDP port {port}"))?;
    let fd = s.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, 7 << 20).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, 7 << 20)?;
        }
    }
    s.set_read_timeout(Some(timeout))?;
    Ok(s)
}

/// Sends each `(datagram, source address)` to `dst` with sendmmsg, choosing the source per
/// datagram with IP_PKTINFO (the source must be an address of this namespace).
pub fn send_from(
    fd: RawFd,
    dst: std::net::SocketAddrV4,
    packets: &[(&[u8], std::net::Ipv4Addr)],
) -> usize {
    const CMSG_WORDS: usize = 8; // 64 bytes ≥ CMSG_SPACE(sizeof(in_pktinfo))
    let mut sent = 0;
    // SAFETY: sockaddr_in is a C struct; zero is valid.
    let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    name.sin_family = libc::AF_INET as libc::sa_family_t;
    name.sin_port = dst.port().to_be();
    name.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
    while sent < packets.len() {
        let chunk = &packets[sent..(sent + BATCH).min(packets.len())];
        // SAFETY: plain C structs, zero is valid; u64 words keep the cmsg area aligned.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdr: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut ctl = [[0u64; CMSG_WORDS]; BATCH];
        for (i, (p, src)) in chunk.iter().enumerate() {
            iov[i].iov_base = p.as_ptr() as *mut libc::c_void;
            iov[i].iov_len = p.len();
            let h = &mut hdr[i].msg_hdr;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
            h.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_control = ctl[i].as_mut_ptr().cast();
            // SAFETY: CMSG_* compute sizes and walk the control buffer we own.
            unsafe {
                let len = std::mem::size_of::<libc::in_pktinfo>() as u32;
                h.msg_controllen = libc::CMSG_SPACE(len) as _;
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(len) as _;
                let info = libc::CMSG_DATA(c).cast::<libc::in_pktinfo>();
                let mut v: libc::in_pktinfo = std::mem::zeroed();
                v.ipi_spec_dst.s_addr = u32::from(*src).to_be();
                std::ptr::write_unaligned(info, v);
            }
        }
        // SAFETY: every header points at live iovecs, name and control buffers.
        let n = unsafe { libc::sendmmsg(fd, hdr.as_mut_ptr(), chunk.len() as u32, 0) };
        if n < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                _ => return sent,
            }
        }
        sent += n as usize;
    }
    sent
}
