//! TUN queues with offloads: open with IFF_VNET_HDR and TUNSETOFFLOAD (falling back feature by
//! feature), read a super-segment and split it, queue decrypted packets and write them coalesced.

use std::ffi::c_char;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use super::gro::Coalescer;
use super::gso::{self, Segments, SplitError};
use super::vnet::{self, VnetHdr};

/// Largest read: a 64 KiB super-segment behind its virtio_net_hdr.
pub const READ_BUF: usize = 65_535 + vnet::LEN;

/// What the kernel accepted for a TUN device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Reads and writes carry a virtio_net_hdr (needed for everything below).
    pub vnet_hdr: bool,
    /// TSO4/TSO6: reads may be TCP super-segments, writes may be coalesced.
    pub tso: bool,
    /// USO (Linux ≥ 6.2): reads may be UDP super-segments.
    pub uso: bool,
}

#[repr(C)]
struct IfReq {
    name: [c_char; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_queue(name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain open(2) of a constant NUL-terminated path.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq {
        name: [0; 16],
        flags: flags as libc::c_short,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as c_char;
    }
    // SAFETY: TUNSETIFF reads/writes an ifreq-sized struct we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn set_offload(fd: RawFd, features: libc::c_uint) -> bool {
    // SAFETY: TUNSETOFFLOAD takes the feature bits by value.
    unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, features as libc::c_ulong) == 0 }
}

/// Asks for the offloads, most first, and keeps what the kernel accepts.
fn negotiate(fd: RawFd) -> Offloads {
    let tso = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    let uso = libc::TUN_F_USO4 | libc::TUN_F_USO6;
    for (features, tso_on, uso_on) in [(tso | uso, true, true), (tso, true, false)] {
        if set_offload(fd, features) {
            return Offloads {
                vnet_hdr: true,
                tso: tso_on,
                uso: uso_on,
            };
        }
    }
    // Checksum offload alone, or nothing: reads are plain packets behind the header.
    set_offload(fd, libc::TUN_F_CSUM);
    Offloads {
        vnet_hdr: true,
        tso: false,
        uso: false,
    }
}

/// Opens `queues` queues (IFF_MULTI_QUEUE when more than one) of the TUN device `name`,
/// non-blocking. With `offload`, asks for IFF_VNET_HDR and TSO/USO, falling back per feature
/// and, if the kernel refuses the header itself, to plain packets.
pub fn open(name: &str, queues: usize, offload: bool) -> io::Result<(Vec<OwnedFd>, Offloads)> {
    if name.is_empty() || name.len() > 15 || name.contains(['\0', '/', ' ']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let mut base = libc::IFF_TUN | libc::IFF_NO_PI;
    if queues > 1 {
        base |= libc::IFF_MULTI_QUEUE;
    }
    let mut offloads = Offloads::default();
    let first = match offload.then(|| open_queue(name, base | libc::IFF_VNET_HDR)) {
        Some(Ok(fd)) => {
            offloads = negotiate(fd.as_raw_fd());
            fd
        }
        _ => open_queue(name, base)?,
    };
    let flags = if offloads.vnet_hdr {
        base | libc::IFF_VNET_HDR
    } else {
        base
    };
    let mut fds = vec![first];
    for _ in 1..queues {
        fds.push(open_queue(name, flags)?);
    }
    Ok((fds, offloads))
}

/// Why a TUN read gave no packets.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("TUN read failed: {0}")]
    Io(#[source] io::Error),
    #[error("TUN super-segment refused: {0}")]
    Split(#[source] SplitError),
}

/// The read side of one queue: reused buffers, one read per call.
pub struct TunReader {
    fd: RawFd,
    vnet: bool,
    buf: Vec<u8>,
    segs: Segments,
}

impl TunReader {
    pub fn new(fd: RawFd, offloads: Offloads) -> TunReader {
        TunReader {
            fd,
            vnet: offloads.vnet_hdr,
            buf: vec![0; READ_BUF],
            segs: Segments::with_capacity(2 * READ_BUF),
        }
    }

    /// Reads one packet or super-segment and returns the plain packets in it (checksums
    /// complete); `Ok(None)` when the queue is empty.
    pub fn read(&mut self) -> Result<Option<&Segments>, ReadError> {
        // SAFETY: reading into a buffer we own, within its length.
        let n = unsafe { libc::read(self.fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(ReadError::Io(e));
        }
        let data = &self.buf[..n as usize];
        if self.vnet {
            let hdr = VnetHdr::decode(data).ok_or(ReadError::Split(SplitError::Truncated))?;
            gso::split(&hdr, &data[vnet::LEN..], &mut self.segs).map_err(ReadError::Split)?;
        } else {
            gso::split(&VnetHdr::default(), data, &mut self.segs).map_err(ReadError::Split)?;
        }
        Ok(Some(&self.segs))
    }
}

/// The write side of one queue: packets queued during a batch, coalesced when the TUN
/// has TSO, written at [`TunWriter::flush`].
pub struct TunWriter {
    fd: RawFd,
    offloads: Offloads,
    gro: Coalescer,
}

fn writev(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<()> {
    // SAFETY: IoSlice is ABI-compatible with iovec on Unix; the slices outlive the call.
    let n = unsafe { libc::writev(fd, iov.as_ptr().cast(), iov.len() as libc::c_int) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes one packet at once, behind a plain virtio_net_hdr when the queue has them.
fn write_one(fd: RawFd, vnet_hdr: bool, packet: &[u8]) -> bool {
    let plain = VnetHdr::default().encode();
    let head: &[u8] = if vnet_hdr { &plain } else { &[] };
    writev(fd, &[IoSlice::new(head), IoSlice::new(packet)]).is_ok()
}

impl TunWriter {
    pub fn new(fd: RawFd, offloads: Offloads) -> TunWriter {
        TunWriter {
            fd,
            offloads,
            gro: Coalescer::new(offloads.uso),
        }
    }

    /// Queues one packet (copied). Without TSO it is written at once; returns false if that
    /// write failed.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        if self.offloads.tso {
            self.gro.push(packet);
            return true;
        }
        write_one(self.fd, self.offloads.vnet_hdr, packet)
    }

    /// Queues the packet that `fill` writes in place into `room` bytes and whose length it
    /// returns (`None`: nothing queued), as [`Coalescer::push_with`]: decryption writes there
    /// directly. Without TSO it is written at once; returns false only if that write failed.
    pub fn push_with(
        &mut self,
        room: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        if self.offloads.tso {
            self.gro.push_with(room, fill);
            return true;
        }
        let (fd, vnet_hdr) = (self.fd, self.offloads.vnet_hdr);
        let mut ok = true;
        // The queue's room serves as the buffer; nothing stays queued.
        self.gro.push_with(room, |buf| {
            let n = fill(buf)?;
            ok = buf
                .get(..n)
                .is_some_and(|packet| write_one(fd, vnet_hdr, packet));
            None
        });
        ok
    }

    /// Writes what was queued; returns how many writes failed.
    pub fn flush(&mut self) -> usize {
        if self.gro.is_empty() {
            return 0;
        }
        let mut failed = 0;
        let fd = self.fd;
        self.gro.flush(|iov| {
            if writev(fd, iov).is_err() {
                failed += 1;
            }
        });
        failed
    }
}
