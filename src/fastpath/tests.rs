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

/// Each case: the second segment of a flow must not join the first.
#[test]
fn the_kernel_rules_for_not_merging() {
    let base = Tcp::new(1000, vec![]);
    let first = {
        let mut t = base.clone();
        t.payload = vec![7; 1000];
        t
    };
    let next = || {
        let mut t = base.clone();
        t.seq = 2000;
        t.id = 101;
        t.payload = vec![9; 1000];
        t
    };
    let mutated = |f: fn(&mut Tcp)| {
        let mut t = next();
        f(&mut t);
        t.build()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gap in sequence", mutated(|t| t.seq = 2001)),
        ("other ACK number", mutated(|t| t.ack += 1)),
        ("other window", mutated(|t| t.window += 1)),
        ("other options", mutated(|t| t.options[7] ^= 1)),
        ("FIN", mutated(|t| t.flags |= 0x01)),
        ("RST", mutated(|t| t.flags = 0x14)),
        ("URG", mutated(|t| t.flags |= 0x20)),
        ("CWR", mutated(|t| t.flags |= 0x80)),
        ("other TTL", mutated(|t| t.ttl = 63)),
        ("IP id not + 1", mutated(|t| t.id = 105)),
        (
            "longer than the first",
            mutated(|t| t.payload = vec![9; 1001]),
        ),
        ("pure ACK", mutated(|t| t.payload.clear())),
        ("bad TCP checksum", {
            let mut p = next().build();
            p[20 + 17] ^= 0x40;
            p
        }),
        ("bad IP header checksum", {
            let mut p = next().build();
            p[11] ^= 0x40;
            p
        }),
        ("fragment (MF)", {
            let mut p = next().build();
            p[6] |= 0x20;
            p[10] = 0;
            p[11] = 0;
            let c = ref_sum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p
        }),
        ("other urgent pointer", {
            let mut p = next().build();
            p[20 + 19] = 1;
            fix_tcp(&mut p);
            p
        }),
        ("other IP flags (reserved bit)", {
            let mut p = next().build();
            p[6] |= 0x80;
            fix_ip(&mut p);
            p
        }),
        ("TCP checksum written as -0 (0xffff)", {
            let mut p = next().build();
            // Add the checksum to the first payload word: the rest then sums to -0, and the
            // field 0xffff verifies (a split would write 0x0000 there).
            let c = be16(&p, 36);
            let w = ones_add(be16(&p, 52), c);
            p[52..54].copy_from_slice(&w.to_be_bytes());
            p[36] = 0xff;
            p[37] = 0xff;
            assert_eq!(
                ref_l4(&p, 20, 6, 16),
                0,
                "the field is the -0 form of a valid sum"
            );
            p
        }),
        ("other flow", mutated(|t| t.sport += 1)),
    ];
    for (what, second) in cases {
        let packets = vec![first.build(), second];
        let writes = coalesce(&packets);
        assert_eq!(writes.len(), 2, "{what}: must not merge");
        for (w, p) in writes.iter().zip(&packets) {
            assert_eq!(&w[vnet::LEN..], &p[..], "{what}: written as is, in order");
        }
    }
    // The control: the same `next()` untouched merges.
    assert_eq!(coalesce(&[first.build(), next().build()]).len(), 1);
}

#[test]
fn nothing_joins_after_a_push_or_a_short_segment_and_ip_options_stay_alone() {
    let mut flow = Tcp::new(1, vec![]).flow(4, 1000, 1000);
    // PSH on the second: it closes the merge; the rest starts a new one.
    let mut t = Tcp::new(1001, vec![9; 1000]);
    t.id = 101;
    t.flags = 0x18;
    flow[1] = t.build();
    let writes = coalesce(&flow);
    assert_eq!(writes.len(), 2);
    let back: Vec<Vec<u8>> = writes
        .iter()
        .flat_map(|w| split_write(w).unwrap())
        .collect();
    assert_eq!(back, flow);
    // A short segment ends a merge too.
    let mut short = Tcp::new(1, vec![]).flow(2, 1000, 500);
    short.extend(Tcp::new(1501, vec![]).flow(1, 1000, 1000));
    assert_eq!(coalesce(&short).len(), 2);
    // IPv4 options: never merged.
    let mut opt = Tcp::new(1, vec![]).flow(2, 100, 100);
    for p in &mut opt {
        p[0] = 0x46;
        p.splice(20..20, [1, 1, 1, 0]);
    }
    assert_eq!(coalesce(&opt).len(), 2);
}

#[test]
fn a_merge_stops_at_64_segments_and_64_kib() {
    let flow = Tcp::new(1, vec![]).flow(70, 100, 100);
    let writes = coalesce(&flow);
    assert_eq!(writes.len(), 2);
    let back: Vec<Vec<u8>> = writes
        .iter()
        .flat_map(|w| split_write(w).unwrap())
        .collect();
    assert_eq!(back, flow);
    let big = Tcp::new(1, vec![]).flow(50, 1400, 1400);
    let writes = coalesce(&big);
    assert!(writes.iter().all(|w| w.len() - vnet::LEN <= 65_535));
    assert_eq!(writes.len(), 2);
}

fn arb_flow() -> impl Strategy<Value = (Tcp, usize, usize, usize, bool)> {
    (
        any::<u32>(),
        any::<u16>(),
        prop_oneof![
            Just(vec![]),
            Just(vec![1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8]),
            Just(vec![2, 4, 5, 180])
        ],
        any::<bool>(),
        1usize..20,
        1usize..1500,
        1usize..1500,
        any::<bool>(),
    )
        .prop_map(|(seq, id, options, v6, n, mss, last, psh)| {
            let mut t = Tcp::new(seq, vec![]);
            t.id = id;
            t.options = options;
            t.v6 = v6;
            (t, n, mss, last.min(mss), psh)
        })
}

proptest! {
    /// Two interleaved flows: each merges into one write, order kept, and splitting the
    /// writes gives back exactly the packets that went in.
    #[test]
    fn split_of_coalesce_is_identity((a, n, mss, last, psh) in arb_flow(), (b, m, mss2, last2, _) in arb_flow()) {
        let mut fa = a.flow(n, mss, last);
        if psh {
            let l = fa.len() - 1;
            let ip = if a.v6 { 40 } else { 20 };
            fa[l][ip + 13] |= 0x08;
            let c = ref_l4(&fa[l], ip, 6, 16);
            fa[l][ip + 16..ip + 18].copy_from_slice(&c.to_be_bytes());
        }
        let mut b = b;
        b.sport = a.sport + 1;
        let fb = b.flow(m, mss2, last2);
        let mut input = Vec::new();
        for i in 0..n.max(m) {
            input.extend(fa.get(i).cloned());
            input.extend(fb.get(i).cloned());
        }
        let writes = coalesce(&input);
        prop_assert_eq!(writes.len(), 2);
        let back: Vec<Vec<u8>> = writes.iter().flat_map(|w| split_write(w).unwrap()).collect();
        prop_assert_eq!(&back[..n], &fa[..]);
        prop_assert_eq!(&back[n..], &fb[..]);
        for p in &back {
            assert_checksums(p);
        }
    }

    /// Arbitrary bytes behind an arbitrary header: split refuses or yields packets, never panics.
    #[test]
    fn split_never_panics(hdr in any::<[u8; 10]>(), pkt in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let mut out = Segments::default();
        let _ = split(&VnetHdr::decode(&hdr).unwrap(), &pkt, &mut out);
    }

    /// Arbitrary packets: coalesce writes each byte it was given, in order, when nothing merges.
    #[test]
    fn coalesce_never_panics(pkts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let writes = coalesce(&pkts);
        prop_assert!(writes.len() <= pkts.len());
    }
}

#[test]
fn tso_with_a_tcp_header_shorter_than_20_bytes_is_refused() {
    let (hdr, mut p) = super_segment(&Tcp::new(1, vec![]), 100, 10);
    p[32] = 0x20; // data offset 2 words
    let mut out = Segments::default();
    assert_eq!(split(&hdr, &p, &mut out), Err(SplitError::Truncated));
}

/// A UDP datagram with its checksums (IPv4: id `id`, DF; IPv6: no extension header).
fn udp_dgram(v6: bool, sport: u16, id: u16, payload: &[u8]) -> Vec<u8> {
    let l4 = 8 + payload.len();
    let mut p = if v6 {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4 as u16).to_be_bytes());
        p.extend_from_slice(&[17, 64]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10]);
        p
    } else {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + l4) as u16).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 100, 64, 0, 2, 198, 18, 3, 1]);
        let c = ref_sum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    };
    let ip = p.len();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&[0, 9]);
    p.extend_from_slice(&(l4 as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let c = ref_l4(&p, ip, 17, 6);
    p[ip + 6..ip + 8].copy_from_slice(&c.to_be_bytes());
    p
}

/// `n` datagrams of one flow: `size` bytes of payload each, `last` bytes for the last one.
fn udp_flow(v6: bool, sport: u16, id0: u16, n: usize, size: usize, last: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = if i + 1 == n { last } else { size };
            let payload: Vec<u8> = (0..len).map(|k| (k * 7 + i) as u8).collect();
            udp_dgram(v6, sport, id0.wrapping_add(i as u16), &payload)
        })
        .collect()
}

#[test]
fn a_udp_flow_becomes_one_uso_write_that_splits_back() {
    for v6 in [false, true] {
        let flow = udp_flow(v6, 40000, 65530, 12, 1392, 17);
        let writes = coalesce(&flow);
        assert_eq!(writes.len(), 1, "v6 {v6}");
        let hdr = VnetHdr::decode(&writes[0]).unwrap();
        assert_eq!(hdr.gso_type, vnet::GSO_UDP_L4);
        assert_eq!(hdr.gso_size, 1392);
        assert_eq!(hdr.flags, vnet::F_NEEDS_CSUM);
        assert_eq!(hdr.csum_offset, 6);
        let back = split_write(&writes[0]).unwrap();
        assert_eq!(back, flow);
        back.iter().for_each(|p| assert_checksums(p));
    }
}

#[test]
fn udp_is_not_merged_without_uso_or_against_the_rules() {
    let flow = udp_flow(false, 40000, 1, 2, 1000, 1000);
    let mut c = Coalescer::new(false);
    flow.iter().for_each(|p| c.push(p));
    let mut n = 0;
    c.flush(|_| n += 1);
    assert_eq!(n, 2, "the TUN refused USO");
    let first = flow[0].clone();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("other source port", udp_dgram(false, 40001, 2, &[9; 1000])),
        ("IP id not + 1", udp_dgram(false, 40000, 3, &[9; 1000])),
        (
            "longer than the first",
            udp_dgram(false, 40000, 2, &[9; 1001]),
        ),
        ("empty", udp_dgram(false, 40000, 2, &[])),
        ("no checksum", {
            let mut p = udp_dgram(false, 40000, 2, &[9; 1000]);
            p[26..28].copy_from_slice(&[0, 0]);
            p
        }),
        ("bad checksum", {
            let mut p = udp_dgram(false, 40000, 2, &[9; 1000]);
            p[30] ^= 1;
            p
        }),
        ("other TTL", {
            let mut p = udp_dgram(false, 40000, 2, &[9; 1000]);
            p[8] = 63;
            p[10..12].copy_from_slice(&[0, 0]);
            let c = ref_sum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p
        }),
    ];
    for (why, second) in cases {
        let writes = coalesce(&[first.clone(), second.clone()]);
        assert_eq!(writes.len(), 2, "{why}");
        assert_eq!(
            &writes[1][vnet::LEN..],
            &second[..],
            "{why}: written as it came"
        );
    }
    // Nothing joins after a shorter datagram; 64 datagrams at most per write.
    let mut short = udp_flow(false, 40000, 1, 2, 1000, 500);
    short.push(udp_dgram(false, 40000, 3, &[1; 500]));
    assert_eq!(coalesce(&short).len(), 2);
    let long = udp_flow(false, 40000, 1, 70, 100, 100);
    let writes = coalesce(&long);
    assert_eq!(writes.len(), 2);
    let back: Vec<Vec<u8>> = writes
        .iter()
        .flat_map(|w| split_write(w).unwrap())
        .collect();
    assert_eq!(back, long);
}

proptest! {
    /// A UDP flow interleaved with a TCP flow: one write each, split gives back the input.
    #[test]
    fn udp_and_tcp_flows_split_back_to_what_went_in(
        (t, m, mss, last_t, _) in arb_flow(),
        v6 in any::<bool>(), id0 in any::<u16>(), n in 1usize..70, size in 1usize..1400, last in 1usize..1400,
    ) {
        let fu = udp_flow(v6, 40000, id0, n, size, last.min(size));
        let ft = t.flow(m, mss, last_t);
        let mut input = Vec::new();
        for i in 0..n.max(m) {
            input.extend(fu.get(i).cloned());
            input.extend(ft.get(i).cloned());
        }
        let writes = coalesce(&input);
        // 64 datagrams or 64 KiB per write: a longer flow takes more writes.
        let udp_writes = n.div_ceil(64).max((n * (size + 28)).div_ceil(65_535 - 48));
        prop_assert!(writes.len() >= 2 && writes.len() <= 1 + udp_writes + 1);
        let back: Vec<Vec<u8>> = writes.iter().flat_map(|w| split_write(w).unwrap()).collect();
        let (mut u, mut tc) = (Vec::new(), Vec::new());
        for p in back {
            assert_checksums(&p);
            if p[if p[0] >> 4 == 4 { 9 } else { 6 }] == 17 { u.push(p) } else { tc.push(p) }
        }
        prop_assert_eq!(u, fu);
        prop_assert_eq!(tc, ft);
    }
}

/// `push_with` (each packet written in place, after a declined fill that left garbage in the
/// room) queues exactly what `push` does: the same writes, which split back to the input.
#[test]
fn push_with_in_place_queues_what_push_queues() {
    let mut second = Tcp::new(90_000, Vec::new());
    second.sport = 40001;
    let (a, b) = (
        Tcp::new(1000, Vec::new()).flow(9, 1380, 200),
        second.flow(5, 1380, 1380),
    );
    let mut input: Vec<Vec<u8>> = Vec::new();
    for i in 0..9 {
        input.extend(a.get(i).cloned());
        input.extend(b.get(i).cloned());
        if i == 4 {
            input.push(icmp_echo4(77));
            input.extend(udp_flow(false, 50000, 7, 3, 1000, 33));
        }
    }
    let mut c = Coalescer::new(true);
    for p in &input {
        assert!(!c.push_with(1500, |room| {
            room.fill(0xa5);
            None
        }));
        assert!(
            !c.push_with(100, |room| Some(room.len() + 1)),
            "longer than its room"
        );
        assert!(c.push_with(p.len() + 40, |room| {
            room[..p.len()].copy_from_slice(p);
            Some(p.len())
        }));
    }
    let mut writes: Vec<Vec<u8>> = Vec::new();
    c.flush(|iov: &[IoSlice<'_>]| writes.push(iov.iter().flat_map(|s| s.to_vec()).collect()));
    assert_eq!(writes, coalesce(&input));
    assert_eq!(
        writes.len(),
        4,
        "two TCP flows, the ICMP packet, the UDP flow"
    );
    let back: Vec<Vec<u8>> = writes
        .iter()
        .flat_map(|w| split_write(w).unwrap())
        .collect();
    let mut expected = a.clone();
    expected.extend(b.clone());
    expected.push(icmp_echo4(77));
    expected.extend(udp_flow(false, 50000, 7, 3, 1000, 33));
    let sorted = |mut v: Vec<Vec<u8>>| {
        v.sort();
        v
    };
    assert_eq!(sorted(back), sorted(expected));
}
