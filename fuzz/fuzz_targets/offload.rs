//! Fuzz the TUN offload code with what a kernel or a peer could hand it: a virtio_net_hdr and
//! a super-segment to split, and decrypted packets to coalesce. Never panics; every split
//! segment is a plain packet that re-coalesces (TCP and UDP) and re-splits to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesame::fastpath::gro::Coalescer;
use sesame::fastpath::gso::{split, Segments};
use sesame::fastpath::vnet::{self, VnetHdr};

fuzz_target!(|data: &[u8]| {
    let Some(hdr) = VnetHdr::decode(data) else {
        return;
    };
    let mut segs = Segments::default();
    if split(&hdr, &data[vnet::LEN..], &mut segs).is_err() {
        return;
    }
    // Whatever came out is written coalesced, then read back split: the same packets.
    let mut gro = Coalescer::new(true);
    for s in segs.iter() {
        gro.push(s);
    }
    let mut back: Vec<Vec<u8>> = Vec::new();
    gro.flush(|iov| {
        let w: Vec<u8> = iov.iter().flat_map(|s| s.to_vec()).collect();
        let h = VnetHdr::decode(&w).expect("a write starts with its header");
        let mut out = Segments::default();
        split(&h, &w[vnet::LEN..], &mut out).expect("a coalesced write splits");
        back.extend(out.iter().map(<[u8]>::to_vec));
    });
    let orig: Vec<Vec<u8>> = segs.iter().map(<[u8]>::to_vec).collect();
    assert_eq!(back, orig);
});
