//! The TUN writer against a real TUN device in a namespace of its own: packets written in place
//! (`push_with`, as decryption does) and copied (`push`) reach a local socket, whether the
//! device took the offloads (coalesced writes) or not (each packet written at once, with or
//! without the virtio_net_hdr, as on a kernel that refuses them). Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::require_root;

use std::net::UdpSocket;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use common::netns::{unique, Netns, ThreadNetns};
use sesame::fastpath::csum;
use sesame::fastpath::tun::{self, Offloads, TunWriter};

/// An IPv4/UDP datagram 100.64.9.2:5000 → 100.64.9.1:`port`, IP id `id`, checksums right.
fn udp(id: u16, port: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 100, 64, 9, 2, 100, 64, 9, 1]);
    csum::set_ipv4_header(&mut p[..20]);
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let c = csum::finish(csum::add(csum::pseudo(&p, 17, total - 20), &p[20..]));
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn in_place_and_copied_packets_reach_the_stack_with_and_without_offloads() {
    require_root!("a TUN device in a network namespace");
    let ns = Netns::new("sft");
    let _inside = ThreadNetns::enter(&ns);
    // (asked for offloads, then the modes written with): with the offloads the device also
    // takes plain writes behind a header, as when it refuses TSO; without, bare packets.
    for offload in [true, false] {
        let name = unique("sft");
        let (fds, got) = tun::open(&name, 1, offload).unwrap();
        assert_eq!(got.vnet_hdr, offload, "{got:?}");
        ns.ip(&["addr", "add", "100.64.9.1/24", "dev", &name]);
        ns.ip(&["link", "set", &name, "up"]);
        let modes = if got.tso {
            vec![
                got,
                Offloads {
                    tso: false,
                    uso: false,
                    ..got
                },
            ]
        } else {
            vec![got]
        };
        for mode in modes {
            let sock = UdpSocket::bind("100.64.9.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let port = sock.local_addr().unwrap().port();
            let sent: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 1000]).collect();
            let mut w = TunWriter::new(fds[0].as_raw_fd(), mode);
            for (i, payload) in sent.iter().enumerate() {
                let packet = udp(100 + i as u16, port, payload);
                // A declined fill (a packet the policy refused) leaves nothing behind.
                assert!(w.push_with(2048, |room| {
                    room.fill(0xee);
                    None
                }));
                if i % 2 == 0 {
                    assert!(w.push_with(2048, |room| {
                        room[..packet.len()].copy_from_slice(&packet);
                        Some(packet.len())
                    }));
                } else {
                    assert!(w.push(&packet));
                }
            }
            assert_eq!(w.flush(), 0, "{mode:?}");
            let mut buf = [0u8; 2048];
            for payload in &sent {
                let n = sock
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
                assert_eq!(&buf[..n], &payload[..], "{mode:?}");
            }
        }
        drop(fds);
    }
}
