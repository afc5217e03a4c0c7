//! Split and coalesce against a reference: checksums by an independent naive routine,
//! `split(coalesce(x)) == x`, and the kernel's rules for what must not be merged.

use std::io::IoSlice;

use proptest::prelude::*;

use super::gro::Coalescer;
use super::gso::{split, Segments, SplitError};
use super::vnet::{self, VnetHdr};

/// The reference: RFC 1071 word by word, 32-bit accumulator, no chaining.
fn ref_sum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        s += u32::from(data[i]) << 8 | u32::from(data[i + 1]);
        i += 2;
    }
    if i < data.len() {
        s += u32::from(data[i]) << 8;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The transport checksum computed from scratch by the reference (field zeroed first).
fn ref_l4(pkt: &[u8], ip_len: usize, proto: u8, field: usize) -> u16 {
    let mut l4 = pkt[ip_len..].to_vec();
    l4[field] = 0;
    l4[field + 1] = 0;
    let mut pseudo = Vec::new();
    if pkt[0] >> 4 == 4 {
        pseudo.extend_from_slice(&pkt[12..20]);
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    } else {
        pseudo.extend_from_slice(&pkt[8..40]);
        pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
    }
    pseudo.extend_from_slice(&l4);
    let c = ref_sum(&pseudo);
    if proto == 17 && c == 0 {
        0xffff
    } else {
        c
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Asserts every checksum of a plain packet is right, by the reference.
fn assert_checksums(p: &[u8]) {
    let (ip_len, proto) = if p[0] >> 4 == 4 {
        let ihl = usize::from(p[0] & 15) * 4;
        assert_eq!(ref_sum(&p[..ihl]), 0, "IPv4 header checksum");
        assert_eq!(usize::from(be16(p, 2)), p.len(), "IPv4 total length");
        (ihl, p[9])
    } else {
        assert_eq!(usize::from(be16(p, 4)) + 40, p.len(), "IPv6 payload length");
        (40, p[6])
    };
    match proto {
        6 => assert_eq!(
            be16(p, ip_len + 16),
            ref_l4(p, ip_len, 6, 16),
            "TCP checksum"
        ),
        17 => {
            assert_eq!(
                usize::from(be16(p, ip_len + 4)),
                p.len() - ip_len,
                "UDP length"
            );
            assert_eq!(
                be16(p, ip_len + 6),
                ref_l4(p, ip_len, 17, 6),
                "UDP checksum"
            );
        }
        _ => {}
    }
}

/// Test packet builder (addresses in the ranges the project uses).
#[derive(Clone, Debug)]
struct Tcp {
    v6: bool,
    id: u16,
    ttl: u8,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: Vec<u8>,
    sport: u16,
    payload: Vec<u8>,
}

impl Tcp {
    fn new(seq: u32, payload: Vec<u8>) -> Tcp {
        Tcp {
            v6: false,
            id: 100,
            ttl: 64,
            seq,
            ack: 7777,
            flags: 0x10,
            window: 502,
            // NOP NOP timestamps: the common case of a Linux sender.
            options: vec![1, 1, 8, 10, 0, 0, 1, 2, 0, 0, 3, 4],
            sport: 40000,
            payload,
        }
    }

    fn build(&self) -> Vec<u8> {
        let thl = 20 + self.options.len();
        let l4 = thl + self.payload.len();
        let mut p = if self.v6 {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(l4 as u16).to_be_bytes());
            h.extend_from_slice(&[6, self.ttl]);
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            h
        } else {
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&((20 + l4) as u16).to_be_bytes());
            h.extend_from_slice(&self.id.to_be_bytes());
            h.extend_from_slice(&[0x40, 0, self.ttl, 6, 0, 0]);
            h.extend_from_slice(&[100, 64, 0, 2, 198, 18, 0, 10]);
            let c = ref_sum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        };
        let ip_len = p.len();
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&5201u16.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ack.to_be_bytes());
        p.push(((thl / 4) as u8) << 4);
        p.push(self.flags);
        p.extend_from_slice(&self.window.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&self.options);
        p.extend_from_slice(&self.payload);
        let c = ref_l4(&p, ip_len, 6, 16);
        p[ip_len + 16..ip_len + 18].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// `n` contiguous segments of `mss` bytes (the last `last` bytes), consecutive IP ids.
    fn flow(&self, n: usize, mss: usize, last: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut s = self.clone();
                let len = if i + 1 == n { last } else { mss };
                s.seq = self.seq.wrapping_add((i * mss) as u32);
                s.id = self.id.wrapping_add(i as u16);
                s.payload = (0..len).map(|k| (i * 31 + k * 7) as u8).collect();
                s.build()
            })
            .collect()
    }
}

/// Recomputes the IPv4 header checksum by the reference.
fn fix_ip(p: &mut [u8]) {
    p[10] = 0;
    p[11] = 0;
    let c = ref_sum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the TCP checksum of an IPv4 packet by the reference.
fn fix_tcp(p: &mut [u8]) {
    let c = ref_l4(p, 20, 6, 16);
    p[36..38].copy_from_slice(&c.to_be_bytes());
}

/// One's-complement 16-bit addition.
fn ones_add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

fn udp4(payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 9, 0, 0, 64, 17, 0, 0, 198, 18, 0, 10, 100, 64, 0, 2]);
    let c = ref_sum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&[0x13, 0x88, 0x9c, 0x40]);
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let c = ref_l4(&p, 20, 17, 6);
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

fn icmp_echo4(len: usize) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((28 + len) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 64, 1, 0, 0, 100, 64, 0, 2, 198, 18, 0, 10]);
    let c = ref_sum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
    p.extend((0..len).map(|i| i as u8));
    let c = ref_sum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// What the TUN would receive: each write flattened.
fn coalesce(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut c = Coalescer::new(true);
    for p in packets {
        c.push(p);
    }
    let mut writes = Vec::new();
    c.flush(|iov: &[IoSlice<'_>]| writes.push(iov.iter().flat_map(|s| s.to_vec()).collect()));
    assert!(c.is_empty());
    writes
}

/// Splits one TUN write (virtio_net_hdr + packet) back into packets.
fn split_write(w: &[u8]) -> Result<Vec<Vec<u8>>, SplitError> {
    let hdr = VnetHdr::decode(w).ok_or(SplitError::Truncated)?;
    let mut out = Segments::default();
    split(&hdr, &w[vnet::LEN..], &mut out)?;
    Ok(out.iter().map(<[u8]>::to_vec).collect())
}

/// A TSO super-segment as the kernel hands it over: headers of the first, checksum partial.
fn super_segment(t: &Tcp, payload_len: usize, mss: u16) -> (VnetHdr, Vec<u8>) {
    let mut s = t.clone();
    s.payload = (0..payload_len).map(|k| (k * 13 + 5) as u8).collect();
    let mut p = s.build();
    let ip_len = if t.v6 { 40 } else { 20 };
    // The field holds the pseudo-header sum only (any value: split recomputes it).
    p[ip_len + 16] = 0xab;
    let hdr = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: if t.v6 {
            vnet::GSO_TCPV6
        } else {
            vnet::GSO_TCPV4
        },
        hdr_len: (ip_len + 20 + t.options.len()) as u16,
        gso_size: mss,
        csum_start: ip_len as u16,
        csum_offset: 16,
    };
    (hdr, p)
}

#[test]
fn tso_v4_with_options_splits_into_mss_segments_with_right_checksums() {
    let mut t = Tcp::new(0xffff_f000, vec![]); // sequence numbers wrap inside the split
    t.flags = 0x10 | 0x08 | 0x01; // ACK PSH FIN
    t.id = 0xfffe; // IP ids wrap too
    let (hdr, p) = super_segment(&t, 5001, 1388);
    let mut out = Segments::default();
    split(&hdr, &p, &mut out).unwrap();
    assert_eq!(out.len(), 4);
    let mut payload = Vec::new();
    for (i, s) in out.iter().enumerate() {
        assert_checksums(s);
        let hl = 20 + 32;
        assert_eq!(be32(s, 24), 0xffff_f000u32.wrapping_add(1388 * i as u32));
        assert_eq!(be16(s, 4), 0xfffeu16.wrapping_add(i as u16));
        assert_eq!(
            s[20 + 13],
            if i == 3 { 0x19 } else { 0x10 },
            "PSH/FIN on the last only"
        );
        assert_eq!(&s[40..52], &t.options[..], "options copied");
        assert!(s.len() - hl <= 1388);
        payload.extend_from_slice(&s[hl..]);
    }
    assert_eq!(payload, p[52..].to_vec());
}

#[test]
fn tso_v6_splits_with_right_checksums() {
    let mut t = Tcp::new(1, vec![]);
    t.v6 = true;
    t.options.clear();
    let (hdr, p) = super_segment(&t, 3000, 1440);
    let mut out = Segments::default();
    split(&hdr, &p, &mut out).unwrap();
    let lens: Vec<usize> = out.iter().map(<[u8]>::len).collect();
    assert_eq!(lens, vec![1500, 1500, 180]);
    out.iter().for_each(assert_checksums);
}

#[test]
fn cwr_stays_on_the_first_segment_only() {
    let mut t = Tcp::new(1, vec![]);
    t.flags = 0x90; // ACK CWR
    let (mut hdr, p) = super_segment(&t, 3000, 1000);
    hdr.gso_type |= vnet::GSO_ECN;
    let mut out = Segments::default();
    split(&hdr, &p, &mut out).unwrap();
    let flags: Vec<u8> = out.iter().map(|s| s[33]).collect();
    assert_eq!(flags, vec![0x90, 0x10, 0x10]);
}

#[test]
fn uso_splits_udp_with_lengths_and_checksums() {
    let p = udp4(&(0..2999).map(|i| i as u8).collect::<Vec<_>>());
    let hdr = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_UDP_L4,
        hdr_len: 28,
        gso_size: 1000,
        csum_start: 20,
        csum_offset: 6,
    };
    let mut out = Segments::default();
    split(&hdr, &p, &mut out).unwrap();
    let lens: Vec<usize> = out.iter().map(<[u8]>::len).collect();
    assert_eq!(lens, vec![1028, 1028, 1027]);
    out.iter().for_each(assert_checksums);
    let ids: Vec<u16> = out.iter().map(|s| be16(s, 4)).collect();
    assert_eq!(ids, vec![9, 10, 11]);
}

#[test]
fn partial_checksum_without_gso_is_completed() {
    // The kernel leaves the pseudo-header sum in the field (TUN_F_CSUM): split finishes it.
    let mut p = udp4(b"odd length!");
    let pseudo = {
        let mut v = p[12..20].to_vec();
        v.extend_from_slice(&[0, 17, 0, 19]);
        !ref_sum(&v)
    };
    p[26..28].copy_from_slice(&pseudo.to_be_bytes());
    let hdr = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    let segs = {
        let mut out = Segments::default();
        split(&hdr, &p, &mut out).unwrap();
        out.iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
    };
    assert_eq!(segs, vec![udp4(b"odd length!")]);
}

#[test]
fn plain_packets_pass_unchanged_and_bad_headers_are_refused() {
    let icmp = icmp_echo4(57);
    let mut out = Segments::default();
    split(&VnetHdr::default(), &icmp, &mut out).unwrap();
    assert_eq!(out.get(0), &icmp[..]);
    assert_checksums(out.get(0));
    let tso = VnetHdr {
        gso_type: vnet::GSO_TCPV4,
        gso_size: 100,
        ..VnetHdr::default()
    };
    assert_eq!(split(&tso, &icmp, &mut out), Err(SplitError::Mismatch));
    assert!(out.is_empty());
    assert_eq!(
        split(&tso, &icmp[..10], &mut out),
        Err(SplitError::Truncated)
    );
    let (mut hdr, p) = super_segment(&Tcp::new(1, vec![]), 100, 10);
    hdr.gso_size = 0;
    assert_eq!(split(&hdr, &p, &mut out), Err(SplitError::BadSegmentSize));
    hdr.gso_type = vnet::GSO_UDP;
    assert_eq!(
        split(&hdr, &p, &mut out),
        Err(SplitError::UnsupportedGso(3))
    );
    let partial_past_end = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        csum_start: 80,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    assert_eq!(
        split(&partial_past_end, &icmp, &mut out),
        Err(SplitError::Truncated)
    );
}

#[test]
fn one_flow_becomes_one_write_that_splits_back() {
    let flow = Tcp::new(1000, vec![]).flow(10, 1368, 501);
    let writes = coalesce(&flow);
    assert_eq!(writes.len(), 1);
    let hdr = VnetHdr::decode(&writes[0]).unwrap();
    assert_eq!(hdr.gso_type, vnet::GSO_TCPV4);
    assert_eq!(hdr.gso_size, 1368);
    assert_eq!(hdr.flags, vnet::F_NEEDS_CSUM);
    assert_eq!(split_write(&writes[0]).unwrap(), flow);
}

#[test]
fn a_lone_packet_is_written_as_is_behind_an_empty_header() {
    for p in [
        icmp_echo4(3),
        udp4(b"x"),
        Tcp::new(5, vec![1, 2, 3]).build(),
    ] {
        let writes = coalesce(std::slice::from_ref(&p));
        assert_eq!(writes.len(), 1);
        assert_eq!(&writes[0][..vnet::LEN], &[0; vnet::LEN]);
        assert_eq!(&writes[0][vnet::LEN..], &p[..]);
    }
}

#[path = "tests_gro.rs"]
mod gro;
