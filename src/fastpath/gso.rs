//! Splitting what the TUN hands over with offloads on (a TSO/USO super-segment, or one packet
//! whose checksum is only partial) into plain packets with complete checksums, before the
//! engine judges and encrypts each of them.

use super::csum;
use super::vnet::{self, VnetHdr};

/// Most packets one super-segment may split into (64 KiB at a 64-byte MSS); beyond, it is dropped.
pub const MAX_SEGMENTS: usize = 1024;

use crate::ip_proto::{TCP, UDP};

/// Why a read from the TUN could not be split. Cheap: counted as a malformed TUN packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("shorter than the virtio_net_hdr or the headers it announces")]
    Truncated,
    #[error("GSO type {0} is not one the TUN was asked to offload")]
    UnsupportedGso(u8),
    #[error("IP version or protocol does not match the GSO type")]
    Mismatch,
    #[error("segment size 0 or more than {MAX_SEGMENTS} segments")]
    BadSegmentSize,
}

/// The packets a split produced, in one reused buffer: nothing is allocated once it has
/// grown to the largest super-segment seen.
#[derive(Debug, Default)]
pub struct Segments {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Segments {
    pub fn with_capacity(bytes: usize) -> Segments {
        Segments {
            buf: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(64),
        }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        match self.spans.get(i) {
            Some(&(start, len)) => &self.buf[start..start + len],
            None => &[],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|&(s, l)| &self.buf[s..s + l])
    }

    /// Appends `head ++ body` as one packet and returns it for patching.
    fn push(&mut self, head: &[u8], body: &[u8]) -> &mut [u8] {
        let start = self.buf.len();
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(body);
        self.spans.push((start, head.len() + body.len()));
        &mut self.buf[start..]
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Length of the IP header of `pkt` and its transport protocol (IPv6 extension headers
/// are not walked: the TUN only offloads plain TCP/UDP over IPv6).
fn ip_header(pkt: &[u8]) -> Result<(usize, u8, bool), SplitError> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if ihl < 20 || pkt.len() < ihl {
                return Err(SplitError::Truncated);
            }
            Ok((ihl, pkt[9], true))
        }
        Some(6) if pkt.len() >= 40 => Ok((40, pkt[6], false)),
        _ => Err(SplitError::Truncated),
    }
}

/// Sets the IP length field(s) of a segment whose IP header is `ip_len` bytes long.
fn set_ip_len(seg: &mut [u8], ip_len: usize, v4: bool, id: u16) {
    let total = seg.len();
    if v4 {
        put16(seg, 2, total as u16);
        put16(seg, 4, id);
        csum::set_ipv4_header(&mut seg[..ip_len]);
    } else {
        put16(seg, 4, (total - ip_len) as u16);
    }
}

/// Sets the transport checksum of a segment (`at`: offset of the field in the transport header).
fn set_l4_csum(seg: &mut [u8], ip_len: usize, proto: u8, at: usize) {
    put16(seg, ip_len + at, 0);
    let l4 = seg.len() - ip_len;
    let sum = csum::add(csum::pseudo(seg, proto, l4), &seg[ip_len..]);
    let mut c = csum::finish(sum);
    if proto == UDP && c == 0 {
        c = 0xffff;
    }
    put16(seg, ip_len + at, c);
}

/// Splits `pkt` (what follows the virtio_net_hdr `hdr`) into `out`.
pub fn split(hdr: &VnetHdr, pkt: &[u8], out: &mut Segments) -> Result<(), SplitError> {
    out.clear();
    let gso = hdr.gso_type & !vnet::GSO_ECN;
    match gso {
        vnet::GSO_NONE => complete(hdr, pkt, out),
        vnet::GSO_TCPV4 | vnet::GSO_TCPV6 | vnet::GSO_UDP_L4 => segment(hdr, gso, pkt, out),
        other => Err(SplitError::UnsupportedGso(other)),
    }
}

/// One packet; if the kernel left its checksum partial, finish it.
fn complete(hdr: &VnetHdr, pkt: &[u8], out: &mut Segments) -> Result<(), SplitError> {
    let seg = out.push(pkt, &[]);
    if hdr.flags & vnet::F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > seg.len() {
        out.clear();
        return Err(SplitError::Truncated);
    }
    // The field holds the pseudo-header sum: summing from csum_start over it gives the whole.
    let mut c = csum::finish(csum::add(0, &seg[start..]));
    let udp = ip_header(seg).is_ok_and(|(_, proto, _)| proto == UDP);
    if udp && c == 0 {
        c = 0xffff;
    }
    put16(seg, field, c);
    Ok(())
}

fn segment(hdr: &VnetHdr, gso: u8, pkt: &[u8], out: &mut Segments) -> Result<(), SplitError> {
    let (ip_len, proto, v4) = ip_header(pkt)?;
    let tcp = gso != vnet::GSO_UDP_L4;
    let want = if tcp { TCP } else { UDP };
    if proto != want || (gso == vnet::GSO_TCPV4) != v4 && tcp {
        return Err(SplitError::Mismatch);
    }
    let l4_len = if tcp {
        let doff = pkt.get(ip_len + 12).ok_or(SplitError::Truncated)?;
        usize::from(doff >> 4) * 4
    } else {
        8
    };
    if l4_len < if tcp { 20 } else { 8 } {
        return Err(SplitError::Truncated);
    }
    let head_len = ip_len + l4_len;
    let head = pkt.get(..head_len).ok_or(SplitError::Truncated)?;
    let payload = &pkt[head_len..];
    let mss = usize::from(hdr.gso_size);
    if mss == 0 || payload.len().div_ceil(mss) > MAX_SEGMENTS {
        return Err(SplitError::BadSegmentSize);
    }
    let id0 = if v4 { be16(pkt, 4) } else { 0 };
    let seq0 = if tcp {
        u32::from_be_bytes([
            head[ip_len + 4],
            head[ip_len + 5],
            head[ip_len + 6],
            head[ip_len + 7],
        ])
    } else {
        0
    };
    let count = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload
        .chunks(mss)
        .chain(payload.is_empty().then_some(&[][..]))
        .enumerate()
    {
        let last = i + 1 == count;
        let seg = out.push(head, chunk);
        set_ip_len(seg, ip_len, v4, id0.wrapping_add(i as u16));
        if tcp {
            let seq = seq0.wrapping_add((i * mss) as u32);
            seg[ip_len + 4..ip_len + 8].copy_from_slice(&seq.to_be_bytes());
            let flags = &mut seg[ip_len + 13];
            if !last {
                *flags &= !(0x01 | 0x08); // FIN and PSH only on the last segment
            }
            if i > 0 {
                *flags &= !0x80; // CWR only on the first
            }
            set_l4_csum(seg, ip_len, TCP, 16);
        } else {
            put16(seg, ip_len + 4, (8 + chunk.len()) as u16);
            set_l4_csum(seg, ip_len, UDP, 6);
        }
    }
    Ok(())
}
