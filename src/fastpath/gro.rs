//! Coalescing the decrypted packets of one batch, GRO-style, so one TUN write carries many TCP
//! segments (TSO) or UDP datagrams (USO) of a flow: the kernel's rules, every other packet as is.
//!
//! Two TCP segments are merged only when the kernel's GRO would merge them: same addresses,
//! ports, IP TOS/TTL/flags (IPv4, no options, not fragmented, IP id + 1) or traffic
//! class/flow label/hop limit (IPv6, no extension header), same ACK number, window, urgent
//! pointer and options, flags ACK alone (PSH allowed on the last one merged), contiguous sequence numbers,
//! every segment the size of the first except a shorter last one, valid checksums, at most
//! [`MAX_SEGMENTS`] segments and 64 KiB. Anything else is written alone, in arrival order
//! within its flow.
//!
//! UDP datagrams (when the TUN accepted USO) merge under the same rules where they apply:
//! same addresses, ports and IP header fields, IP id + 1 (IPv4), every datagram the size of
//! the first but a shorter last one, a valid non-zero checksum (the split recomputes it, so a
//! datagram sent without one is written alone), bounded count and size. The kernel splits the
//! write back into exactly the datagrams that went in.

use std::io::IoSlice;

use super::csum;
use super::vnet::{self, VnetHdr};

/// Most segments merged into one write.
pub const MAX_SEGMENTS: usize = 64;
/// Largest merged packet (the IP length fields' limit).
const MAX_LEN: usize = 65_535;
const NONE: u32 = u32::MAX;

const ACK: u8 = 0x10;
use crate::ip_proto::{TCP, UDP};
const PSH: u8 = 0x08;

#[derive(Debug, Clone, Copy)]
struct Pkt {
    start: u32,
    len: u32,
    /// Next packet of the same item.
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    first: u32,
    last: u32,
    count: u32,
    /// A TCP flow, or a UDP one with `udp` (ports and addresses comparable); false: written
    /// alone, never matched.
    tcp: bool,
    udp: bool,
    /// No more segments may be appended (PSH, short segment, or not mergeable at all).
    closed: bool,
    ip_len: u16,
    head_len: u16,
    gso_size: u16,
    /// IP + TCP header + every payload.
    total: u32,
    next_seq: u32,
    next_id: u16,
}

/// A TCP segment's (or UDP datagram's) header fields, parsed once.
#[derive(Debug, Clone, Copy)]
struct Tcp {
    v4: bool,
    /// A UDP datagram (`seq` and `flags` are 0).
    udp: bool,
    ip_len: usize,
    head_len: usize,
    payload: usize,
    seq: u32,
    flags: u8,
    id: u16,
}

/// The packets of one batch waiting to be written, in reused buffers.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// Whether UDP datagrams may merge (the TUN accepted USO).
    udp: bool,
    /// The queued packets back to back in `..used`; beyond, room kept (zeroed once) for the
    /// next ones, so a packet can be written in place (see [`Coalescer::push_with`]).
    arena: Vec<u8>,
    used: usize,
    pkts: Vec<Pkt>,
    items: Vec<Item>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The TCP view of `p` if it is a well-formed TCP segment (IPv4 without options or IPv6
/// without extension headers), whatever its flags; with `udp`, a UDP datagram's view too.
fn parse_tcp(p: &[u8], udp: bool) -> Option<Tcp> {
    let (v4, ip_len, proto) = match p.first()? >> 4 {
        4 if p.len() >= 28 && p[0] & 0x0f == 5 => (true, 20, p[9]),
        6 if p.len() >= 48 => (false, 40, p[6]),
        _ => return None,
    };
    let total = if v4 {
        usize::from(be16(p, 2))
    } else {
        40 + usize::from(be16(p, 4))
    };
    let id = if v4 { be16(p, 4) } else { 0 };
    if proto == UDP && udp {
        let head_len = ip_len + 8;
        if total != p.len() || usize::from(be16(p, ip_len + 4)) != total - ip_len {
            return None;
        }
        return Some(Tcp {
            v4,
            udp: true,
            ip_len,
            head_len,
            payload: total - head_len,
            seq: 0,
            flags: 0,
            id,
        });
    }
    if proto != TCP || p.len() < ip_len + 20 {
        return None;
    }
    let doff = usize::from(p[ip_len + 12] >> 4) * 4;
    let head_len = ip_len + doff;
    if total != p.len() || doff < 20 || head_len > total {
        return None;
    }
    Some(Tcp {
        v4,
        udp: false,
        ip_len,
        head_len,
        payload: total - head_len,
        seq: be32(p, ip_len + 4),
        flags: p[ip_len + 13],
        id,
    })
}

/// Whether `t` may start or join a merged packet on its own merits.
fn mergeable(p: &[u8], t: &Tcp) -> bool {
    if t.payload == 0 || !t.udp && t.flags & !PSH != ACK {
        return false;
    }
    // A checksum field of 0xffff verifies but is never what a split recomputes (-0 vs +0):
    // such a packet is written as it came. So is a UDP datagram without a checksum (0).
    if t.v4 {
        // Not a fragment (MF clear, offset 0); header checksum valid.
        if be16(p, 6) & 0x3fff != 0
            || be16(p, 10) == 0xffff
            || csum::fold(csum::add(0, &p[..20])) != 0xffff
        {
            return false;
        }
    }
    let l4 = p.len() - t.ip_len;
    let (proto, field) = if t.udp { (UDP, 6) } else { (TCP, 16) };
    let check = be16(p, t.ip_len + field);
    check != 0xffff
        && (check != 0 || !t.udp)
        && csum::fold(csum::add(csum::pseudo(p, proto, l4), &p[t.ip_len..])) == 0xffff
}

/// Same flow as the item's first packet `f`: addresses and ports.
fn same_flow(f: &[u8], p: &[u8], v4: bool, ip_len: usize) -> bool {
    let addrs = if v4 { 12..20 } else { 8..40 };
    f[0] >> 4 == p[0] >> 4
        && f.get(addrs.clone()) == p.get(addrs)
        && f.get(ip_len..ip_len + 4) == p.get(ip_len..ip_len + 4)
}

/// The header fields that must match for `p` to follow `f` (same flow already known).
fn same_headers(f: &[u8], p: &[u8], t: &Tcp, item: &Item) -> bool {
    let ip = t.ip_len;
    if usize::from(item.head_len) != t.head_len {
        return false;
    }
    let ip_ok = if t.v4 {
        f[1] == p[1] && f[8] == p[8] && f[6..8] == p[6..8]
    } else {
        f[..4] == p[..4] && f[7] == p[7]
    };
    if t.udp {
        // Ports are the flow's; length and checksum are the datagram's own.
        return ip_ok;
    }
    // ACK number; data offset and reserved bits; window; urgent pointer; options. (Flags are
    // ACK, or ACK|PSH on the last, for both: see `mergeable`.)
    ip_ok
        && f[ip + 8..ip + 12] == p[ip + 8..ip + 12]
        && f[ip + 12] == p[ip + 12]
        && f[ip + 14..ip + 16] == p[ip + 14..ip + 16]
        && f[ip + 18..ip + 20] == p[ip + 18..ip + 20]
        && f[ip + 20..t.head_len] == p[ip + 20..t.head_len]
}

impl Coalescer {
    /// A queue that merges TCP segments (TSO), and UDP datagrams too when `udp` (USO).
    pub fn new(udp: bool) -> Coalescer {
        Coalescer {
            udp,
            arena: Vec::with_capacity(256 * 1024),
            used: 0,
            pkts: Vec::with_capacity(256),
            items: Vec::with_capacity(256),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn pkt(&self, i: u32) -> &[u8] {
        let p = self.pkts[i as usize];
        &self.arena[p.start as usize..(p.start + p.len) as usize]
    }

    /// `n` writable bytes after the queued packets.
    fn room(&mut self, n: usize) -> &mut [u8] {
        let end = self.used + n;
        if self.arena.len() < end {
            self.arena.resize(end, 0);
        }
        &mut self.arena[self.used..end]
    }

    /// Registers the `n` bytes written at the end of the queue as a packet.
    fn register(&mut self, n: usize) -> u32 {
        let idx = self.pkts.len() as u32;
        self.pkts.push(Pkt {
            start: self.used as u32,
            len: n as u32,
            next: NONE,
        });
        self.used += n;
        idx
    }

    /// Queues one packet for the TUN (copied: the caller's buffer is reused).
    pub fn push(&mut self, packet: &[u8]) {
        self.room(packet.len()).copy_from_slice(packet);
        self.admit(packet.len());
    }

    /// Queues the packet that `fill` writes in place into `room` bytes and whose length it
    /// returns; `None` queues nothing. Returns whether a packet was queued. Decryption writes
    /// here directly, saving the copy [`Coalescer::push`] makes.
    pub fn push_with(
        &mut self,
        room: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        match fill(self.room(room)) {
            Some(n) if n <= room => {
                self.admit(n);
                true
            }
            _ => false,
        }
    }

    /// Queues the `n`-byte packet just written after the queued ones: appended to its flow's
    /// latest item when the rules allow, else an item of its own.
    fn admit(&mut self, n: usize) {
        let p = &self.arena[self.used..self.used + n];
        let tcp = parse_tcp(p, self.udp);
        let ok = tcp.is_some_and(|t| mergeable(p, &t));
        if let (Some(t), true) = (tcp, ok) {
            if let Some(i) = self.latest_of_flow(p, &t).filter(|&i| self.fits(i, p, &t)) {
                return self.append(i, n, &t);
            }
        }
        let idx = self.register(n);
        let item = match tcp {
            Some(t) => Item {
                first: idx,
                last: idx,
                count: 1,
                tcp: true,
                udp: t.udp,
                closed: !ok || t.flags & PSH != 0,
                ip_len: t.ip_len as u16,
                head_len: t.head_len as u16,
                gso_size: t.payload.min(usize::from(u16::MAX)) as u16,
                total: n as u32,
                next_seq: t.seq.wrapping_add(t.payload as u32),
                next_id: t.id.wrapping_add(1),
            },
            None => Item {
                first: idx,
                last: idx,
                count: 1,
                tcp: false,
                udp: false,
                closed: true,
                ip_len: 0,
                head_len: 0,
                gso_size: 0,
                total: n as u32,
                next_seq: 0,
                next_id: 0,
            },
        };
        self.items.push(item);
    }

    /// The most recent item of the packet's flow (only it may be extended: order within a flow).
    fn latest_of_flow(&self, p: &[u8], t: &Tcp) -> Option<usize> {
        (0..self.items.len()).rev().find(|&i| {
            let it = &self.items[i];
            it.tcp && it.udp == t.udp && same_flow(self.pkt(it.first), p, t.v4, t.ip_len)
        })
    }

    /// Whether `p` may extend item `i` (its flow's latest).
    fn fits(&self, i: usize, p: &[u8], t: &Tcp) -> bool {
        let item = self.items[i];
        !item.closed
            && item.count < MAX_SEGMENTS as u32
            && (t.udp || t.seq == item.next_seq)
            && (!t.v4 || t.id == item.next_id)
            && t.payload <= usize::from(item.gso_size)
            && item.total as usize + t.payload <= MAX_LEN
            && same_headers(self.pkt(item.first), p, t, &item)
    }

    /// Appends the `n`-byte packet just written (see [`Coalescer::fits`]) to item `i`.
    fn append(&mut self, i: usize, n: usize, t: &Tcp) {
        let idx = self.register(n);
        let last = self.items[i].last;
        self.pkts[last as usize].next = idx;
        let it = &mut self.items[i];
        it.last = idx;
        it.count += 1;
        it.total += t.payload as u32;
        it.next_seq = t.seq.wrapping_add(t.payload as u32);
        it.next_id = t.id.wrapping_add(1);
        it.closed = t.flags & PSH != 0 || t.payload < usize::from(it.gso_size);
    }

    /// Hands every queued write, in order, to `write` (virtio_net_hdr first, then the
    /// packet in pieces), and empties the queue.
    pub fn flush(&mut self, mut write: impl FnMut(&[IoSlice<'_>])) {
        let mut head = [0u8; 120];
        for k in 0..self.items.len() {
            let item = self.items[k];
            if item.count == 1 {
                let plain = VnetHdr::default().encode();
                write(&[IoSlice::new(&plain), IoSlice::new(self.pkt(item.first))]);
                continue;
            }
            let f = self.pkt(item.first);
            let hl = usize::from(item.head_len);
            let ip = usize::from(item.ip_len);
            let v4 = f[0] >> 4 == 4;
            let head = &mut head[..hl];
            head.copy_from_slice(&f[..hl]);
            let total = item.total as usize;
            if v4 {
                head[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                csum::set_ipv4_header(&mut head[..ip]);
            } else {
                head[4..6].copy_from_slice(&((total - ip) as u16).to_be_bytes());
            }
            let (proto, field, gso_type) = if item.udp {
                head[ip + 4..ip + 6].copy_from_slice(&((total - ip) as u16).to_be_bytes());
                (UDP, 6, vnet::GSO_UDP_L4)
            } else {
                let last = self.pkt(item.last);
                head[ip + 13] |= last[ip + 13] & PSH;
                let gso = if v4 { vnet::GSO_TCPV4 } else { vnet::GSO_TCPV6 };
                (TCP, 16, gso)
            };
            // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, the kernel does the rest.
            let partial = csum::fold(csum::pseudo(head, proto, total - ip));
            head[ip + field..ip + field + 2].copy_from_slice(&partial.to_be_bytes());
            let vh = VnetHdr {
                flags: vnet::F_NEEDS_CSUM,
                gso_type,
                hdr_len: item.head_len,
                gso_size: item.gso_size,
                csum_start: item.ip_len,
                csum_offset: field as u16,
            }
            .encode();
            let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS + 2];
            iov[0] = IoSlice::new(&vh);
            iov[1] = IoSlice::new(head);
            let mut n = 2;
            let mut at = item.first;
            while at != NONE {
                iov[n] = IoSlice::new(&self.pkt(at)[hl..]);
                n += 1;
                at = self.pkts[at as usize].next;
            }
            write(&iov[..n]);
        }
        self.items.clear();
        self.pkts.clear();
        self.used = 0;
    }
}
