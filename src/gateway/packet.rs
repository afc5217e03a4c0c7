//! IP packet header parsing for the filter: addresses, protocol, ports, ICMP ids. Bounds-checked, never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ip_proto;

/// Why a packet could not be parsed. Cheap (no allocation): it is counted, never logged per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("IP version {0} is neither 4 nor 6")]
    BadVersion(u8),
    #[error("packet shorter than its headers")]
    Truncated,
    #[error("inconsistent header length fields")]
    BadLength,
}

/// What the filter needs from a packet: the 5-tuple, plus the ICMP shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Transport detail, see [`Transport`].
    pub transport: Transport,
}

/// The transport part of a packet as the filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP or UDP ports.
    Ports { sport: u16, dport: u16 },
    /// ICMP echo request (`reply == false`) or reply, with its identifier.
    Echo { id: u16, reply: bool },
    /// An ICMP error (unreachable, time exceeded, parameter problem) quoting the header
    /// of the packet that caused it: its 5-tuple as seen by the sender of that packet.
    IcmpError(Quoted),
    /// Any other ICMP message, another protocol, or a non-first fragment: no ports.
    Other,
}

/// The 5-tuple of the packet quoted inside an ICMP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Source/destination ports, or (echo id, 0) for a quoted echo request.
    pub sport: u16,
    pub dport: u16,
}

impl PacketInfo {
    /// The destination port for policy matching (0 when the protocol has none).
    pub fn dport(&self) -> u16 {
        match self.transport {
            Transport::Ports { dport, .. } => dport,
            _ => 0,
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn v4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
}

fn v6(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let s: [u8; 16] = b.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(Ipv6Addr::from(s))
}

/// Parses an IPv4 or IPv6 packet as read from the TUN device or decrypted from a peer.
pub fn parse(packet: &[u8]) -> Result<PacketInfo, PacketError> {
    let first = *packet.first().ok_or(PacketError::Empty)?;
    match first >> 4 {
        4 => parse_v4(packet, false),
        6 => parse_v6(packet, false),
        v => Err(PacketError::BadVersion(v)),
    }
}

/// Source address of an IP packet, without parsing further (anti-spoofing needs only this).
pub fn source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => v4(packet, 12).map(IpAddr::V4),
        6 => v6(packet, 8).map(IpAddr::V6),
        _ => None,
    }
}

/// `quoted` relaxes length checks: an ICMP error quotes only the start of the original packet.
fn parse_v4(p: &[u8], quoted: bool) -> Result<PacketInfo, PacketError> {
    if p.len() < 20 {
        return Err(PacketError::Truncated);
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::BadLength);
    }
    if p.len() < ihl {
        return Err(PacketError::Truncated);
    }
    let total = usize::from(be16(p, 2).ok_or(PacketError::Truncated)?);
    if !quoted && (total < ihl || total > p.len()) {
        return Err(PacketError::BadLength);
    }
    let end = if quoted { p.len() } else { total };
    let proto = p[9];
    let src = IpAddr::V4(v4(p, 12).ok_or(PacketError::Truncated)?);
    let dst = IpAddr::V4(v4(p, 16).ok_or(PacketError::Truncated)?);
    let frag_offset = be16(p, 6).ok_or(PacketError::Truncated)? & 0x1fff;
    let payload = p.get(ihl..end).ok_or(PacketError::Truncated)?;
    let transport = if frag_offset != 0 {
        Transport::Other
    } else {
        transport(proto, payload, quoted, ip_proto::ICMP)?
    };
    Ok(PacketInfo {
        src,
        dst,
        proto,
        transport,
    })
}

fn parse_v6(p: &[u8], quoted: bool) -> Result<PacketInfo, PacketError> {
    if p.len() < 40 {
        return Err(PacketError::Truncated);
    }
    let payload_len = usize::from(be16(p, 4).ok_or(PacketError::Truncated)?);
    if !quoted && 40 + payload_len > p.len() {
        return Err(PacketError::BadLength);
    }
    let end = if quoted { p.len() } else { 40 + payload_len };
    let src = IpAddr::V6(v6(p, 8).ok_or(PacketError::Truncated)?);
    let dst = IpAddr::V6(v6(p, 24).ok_or(PacketError::Truncated)?);
    // Extension headers are not walked: the policy only knows TCP/UDP/ICMP, so any other
    // next header is `Other` (and denied unless a rule allows any protocol).
    let proto = p[6];
    let payload = p.get(40..end).ok_or(PacketError::Truncated)?;
    let transport = transport(proto, payload, quoted, ip_proto::ICMPV6)?;
    Ok(PacketInfo {
        src,
        dst,
        proto,
        transport,
    })
}

fn transport(proto: u8, l4: &[u8], quoted: bool, icmp: u8) -> Result<Transport, PacketError> {
    match proto {
        ip_proto::TCP | ip_proto::UDP => {
            // A quoted header carries at least 8 bytes of the transport header (RFC 792).
            let need = match (quoted, proto) {
                (true, _) => 4,
                (false, ip_proto::TCP) => 20,
                _ => 8,
            };
            if l4.len() < need {
                return Err(PacketError::Truncated);
            }
            let sport = be16(l4, 0).ok_or(PacketError::Truncated)?;
            let dport = be16(l4, 2).ok_or(PacketError::Truncated)?;
            Ok(Transport::Ports { sport, dport })
        }
        p if p == icmp => {
            let ty = *l4.first().ok_or(PacketError::Truncated)?;
            let (echo_req, echo_rep) = if icmp == ip_proto::ICMP {
                (8, 0)
            } else {
                (128, 129)
            };
            if ty == echo_req || ty == echo_rep {
                let id = be16(l4, 4).ok_or(PacketError::Truncated)?;
                return Ok(Transport::Echo {
                    id,
                    reply: ty == echo_rep,
                });
            }
            let is_error = if icmp == ip_proto::ICMP {
                matches!(ty, 3 | 11 | 12)
            } else {
                matches!(ty, 1..=4)
            };
            if is_error && !quoted {
                let inner = l4.get(8..).ok_or(PacketError::Truncated)?;
                let q = if icmp == ip_proto::ICMP {
                    parse_v4(inner, true)?
                } else {
                    parse_v6(inner, true)?
                };
                let (sport, dport) = match q.transport {
                    Transport::Ports { sport, dport } => (sport, dport),
                    Transport::Echo { id, .. } => (id, 0),
                    _ => return Ok(Transport::Other),
                };
                return Ok(Transport::IcmpError(Quoted {
                    src: q.src,
                    dst: q.dst,
                    proto: q.proto,
                    sport,
                    dport,
                }));
            }
            Ok(Transport::Other)
        }
        _ => Ok(Transport::Other),
    }
}

/// Test and fuzz helpers: build minimal, valid IPv4 packets.
pub mod build {
    use std::net::Ipv4Addr;

    use crate::ip_proto;

    /// An IPv4 packet with `proto` and the given transport bytes (checksums are zero: the
    /// filter does not verify them, the receiving stack does).
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
        let total = 20 + l4.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        let sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p[20..].copy_from_slice(l4);
        p
    }

    /// A TCP segment header (20 bytes) with the given flags.
    pub fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut l4 = [0u8; 20];
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = flags;
        ipv4(src, dst, ip_proto::TCP, &l4)
    }

    pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut l4 = vec![0u8; 8 + payload.len()];
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4[8..].copy_from_slice(payload);
        ipv4(src, dst, ip_proto::UDP, &l4)
    }

    /// ICMP echo request (`reply == false`) or reply.
    pub fn echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, reply: bool) -> Vec<u8> {
        let mut l4 = [0u8; 8];
        l4[0] = if reply { 0 } else { 8 };
        l4[4..6].copy_from_slice(&id.to_be_bytes());
        ipv4(src, dst, ip_proto::ICMP, &l4)
    }

    /// ICMP error of `ty` (3 unreachable, 11 time exceeded) quoting `original`.
    pub fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, original: &[u8]) -> Vec<u8> {
        let quoted = &original[..original.len().min(28)];
        let mut l4 = vec![0u8; 8 + quoted.len()];
        l4[0] = ty;
        l4[8..].copy_from_slice(quoted);
        ipv4(src, dst, ip_proto::ICMP, &l4)
    }

    fn checksum(b: &[u8]) -> u16 {
        let mut sum = 0u32;
        for c in b.chunks(2) {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            sum += u32::from(w);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAPTOP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
    const PAIE: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);

    #[test]
    fn parses_tcp_ports() {
        let p = build::tcp(LAPTOP, PAIE, 40000, 443, 0x02);
        let info = parse(&p).unwrap();
        assert_eq!(info.src, IpAddr::V4(LAPTOP));
        assert_eq!(info.dst, IpAddr::V4(PAIE));
        assert_eq!(info.proto, ip_proto::TCP);
        assert_eq!(
            info.transport,
            Transport::Ports {
                sport: 40000,
                dport: 443
            }
        );
        assert_eq!(info.dport(), 443);
    }

    #[test]
    fn parses_echo_and_icmp_error() {
        let req = build::echo(LAPTOP, PAIE, 77, false);
        assert_eq!(
            parse(&req).unwrap().transport,
            Transport::Echo {
                id: 77,
                reply: false
            }
        );
        let orig = build::udp(LAPTOP, PAIE, 5000, 53, b"q");
        let err = build::icmp_error(PAIE, LAPTOP, 3, &orig);
        let info = parse(&err).unwrap();
        assert_eq!(
            info.transport,
            Transport::IcmpError(Quoted {
                src: IpAddr::V4(LAPTOP),
                dst: IpAddr::V4(PAIE),
                proto: ip_proto::UDP,
                sport: 5000,
                dport: 53
            })
        );
    }

    #[test]
    fn rejects_lies_about_length() {
        let mut p = build::tcp(LAPTOP, PAIE, 1, 2, 0);
        p[2..4].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(parse(&p), Err(PacketError::BadLength));
        let mut p = build::tcp(LAPTOP, PAIE, 1, 2, 0);
        p[0] = 0x44; // IHL 16 bytes
        assert_eq!(parse(&p), Err(PacketError::BadLength));
        assert_eq!(parse(&[]), Err(PacketError::Empty));
        assert_eq!(parse(&[0x45; 10]), Err(PacketError::Truncated));
        assert_eq!(parse(&[0x15; 30]), Err(PacketError::BadVersion(1)));
    }

    #[test]
    fn truncated_tcp_is_rejected() {
        let p = build::ipv4(LAPTOP, PAIE, ip_proto::TCP, &[0, 1]);
        assert_eq!(parse(&p), Err(PacketError::Truncated));
    }

    #[test]
    fn non_first_fragment_has_no_ports() {
        let mut p = build::udp(LAPTOP, PAIE, 1, 53, b"x");
        p[6..8].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse(&p).unwrap().transport, Transport::Other);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
            let _ = source(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_valid_packets(
            flips in proptest::collection::vec((0usize..60, any::<u8>()), 0..8),
            cut in 0usize..60,
        ) {
            let orig = build::udp(LAPTOP, PAIE, 5000, 53, b"hello");
            let mut p = build::icmp_error(PAIE, LAPTOP, 3, &orig);
            for (i, b) in flips {
                if let Some(x) = p.get_mut(i) { *x = b; }
            }
            p.truncate(cut);
            let _ = parse(&p);
        }
    }
}
