//! Coalescing (GRO) against the kernel's rules and a reference: what must not merge, caps,
//! `split(coalesce(x)) == x` for TCP and UDP flows, in-place pushes.

use super::*;

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
    // RFC 768: a sum that comes out as zero is sent as all ones (zero means "no checksum").
    let c = match ref_l4(&p, ip, 17, 6) {
        0 => 0xffff,
        c => c,
    };
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
        // A datagram whose checksum field is 0xffff (about one in 65,536) is written as it
        // came (see `gro::mergeable`): it and what follows it are two more writes.
        let udp_writes = udp_writes + 2 * fu.iter().filter(|p| p[if v6 { 46 } else { 26 }..][..2] == [0xff, 0xff]).count();
        prop_assert!(writes.len() >= 2 && writes.len() <= 1 + udp_writes + 1, "{} writes: {:?}", writes.len(), writes.iter().map(Vec::len).collect::<Vec<_>>());
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
