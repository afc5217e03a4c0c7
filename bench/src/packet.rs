//! Builds the inner IPv4/UDP packets the load generator encrypts.

use std::net::Ipv4Addr;

/// IPv4 + UDP header size.
pub const HEADERS: usize = 28;

/// The Internet checksum of `head` then `data` (`head` of even length).
fn checksum(head: &[u8], data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in head.chunks(2).chain(data.chunks(2)) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes an IPv4/UDP packet of `total` bytes (headers included) into `out[..total]`.
/// As a Linux sender writes them: IP id = `seq` (so one flow's ids follow each other), DF
/// set, a UDP checksum; the payload carries `seq`.
pub fn udp4(
    out: &mut [u8],
    total: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u64,
) {
    let total = total.max(HEADERS + 8);
    let p = &mut out[..total];
    p.fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20], &[]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    p[28..36].copy_from_slice(&seq.to_be_bytes());
    // Pseudo-header (addresses, protocol, UDP length) then the UDP header and payload.
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&p[12..20]);
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&p[24..26]);
    let c = match checksum(&pseudo, &p[20..]) {
        0 => 0xffff,
        c => c,
    };
    p[26..28].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_verifies() {
        let mut buf = [0u8; 100];
        udp4(
            &mut buf,
            100,
            Ipv4Addr::new(100, 64, 16, 1),
            Ipv4Addr::new(198, 18, 2, 2),
            1000,
            2000,
            7,
        );
        assert_eq!(checksum(&buf[..20], &[]), 0);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 100);
        assert_eq!(u16::from_be_bytes([buf[24], buf[25]]), 80);
        assert_eq!(u16::from_be_bytes([buf[4], buf[5]]), 7);
        let mut pseudo = buf[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17, 0, 80]);
        pseudo.extend_from_slice(&buf[20..]);
        assert_eq!(checksum(&pseudo, &[]), 0, "UDP checksum");
    }
}
