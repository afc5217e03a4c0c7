//! The UDP batch I/O against real loopback sockets: prefaulted buffers, batches, GSO sends, GRO receives, in-place pushes.

use super::*;

/// Pages of `buf` the kernel has resident (mincore), and how many pages it spans.
fn resident_pages(buf: &[u8]) -> (usize, usize) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let start = buf.as_ptr() as usize & !(page - 1);
    let end = buf.as_ptr() as usize + buf.len();
    let pages = (end - start).div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: the range covers memory we own (rounded to its pages); `vec` has one byte
    // per page.
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    (vec.iter().filter(|b| **b & 1 == 1).count(), pages)
}

/// Gives the whole pages inside `buf` back to the kernel (they read as zeroes on the next
/// touch): the partial pages at its two ends may hold other allocations and are left alone.
fn evict_inner_pages(buf: &mut [u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let start = (buf.as_mut_ptr() as usize).next_multiple_of(page);
    let end = (buf.as_mut_ptr() as usize + buf.len()) & !(page - 1);
    // SAFETY: [start, end) is made of whole pages inside `buf`, which we own mutably; any byte
    // value (zero included) is a valid u8.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
}

#[test]
fn prefault_makes_every_buffer_page_resident() {
    let gro = UdpOffloads {
        gso: true,
        gro: true,
    };
    let mut b = Batch::with_offloads(1500, gro);
    // 32 × 64 KiB. The allocator may hand out heap another test already touched (resident), so
    // the test starts from pages it gave back to the kernel itself: at most the two partial
    // pages at the ends stay resident.
    evict_inner_pages(&mut b.bufs);
    let (before, pages) = resident_pages(&b.bufs);
    assert!(pages >= 512, "{pages}");
    assert!(before <= 2, "{before} of {pages} pages resident before");
    b.prefault();
    assert_eq!(resident_pages(&b.bufs), (pages, pages));
}

#[test]
fn batch_round_trip_on_loopback() {
    let a = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let sock_a = Socket::from(a);
    let a_addr = sock_a.local_addr().unwrap().as_socket().unwrap();
    let b = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let b_addr = Socket::from(b.try_clone().unwrap())
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap();
    let mut out = Batch::new(2048);
    for i in 0..5u8 {
        assert!(out.push(a_addr, &[i; 100]));
    }
    assert_eq!(out.flush(b.as_raw_fd()), 0);
    let mut inb = Batch::new(2048);
    let mut got = 0;
    for _ in 0..100 {
        got += inb.recv(sock_a.as_raw_fd()).unwrap();
        if got == 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(got, 5);
    let (from, data) = inb.datagrams().next().unwrap();
    assert_eq!(from, Some(b_addr));
    assert_eq!(data.len(), 100);
}

/// GSO on send and GRO on receive over loopback: 20 datagrams of 1200 bytes and a short
/// last one leave in one send, arrive in fewer messages than datagrams, and come back
/// out of `datagrams()` exactly as sent, in order.
#[test]
fn gso_send_and_gro_receive_round_trip() {
    let rx = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let rx_off = enable_offloads(rx.as_raw_fd());
    let rx_addr = Socket::from(rx.try_clone().unwrap())
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap();
    let tx = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let tx_off = enable_offloads(tx.as_raw_fd());
    assert!(tx_off.gso && rx_off.gro, "this kernel has UDP GSO and GRO");
    let mut out = Batch::with_offloads(2048, tx_off);
    let sent: Vec<Vec<u8>> = (0..21u8)
        .map(|i| vec![i; if i == 20 { 333 } else { 1200 }])
        .collect();
    for d in &sent {
        assert!(out.push(rx_addr, d));
    }
    assert_eq!(out.prepare_send(0), 1, "one GSO message");
    assert_eq!(out.flush(tx.as_raw_fd()), 0);
    assert!(out.gso());
    let mut inb = Batch::with_offloads(2048, rx_off);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut messages = 0;
    for _ in 0..100 {
        messages += inb.recv(rx.as_raw_fd()).unwrap();
        got.extend(inb.datagrams().map(|(_, d)| d.to_vec()));
        if got.len() >= sent.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(got, sent);
    assert!(messages < sent.len(), "GRO coalesced: {messages} messages");
}

/// Without offloads, datagrams to two destinations and of mixed sizes still go one by one.
#[test]
fn gso_groups_only_one_destination_and_one_size() {
    let mut b = Batch::with_offloads(
        2048,
        UdpOffloads {
            gso: true,
            gro: false,
        },
    );
    let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let c: SocketAddr = "127.0.0.2:9".parse().unwrap();
    for (dst, len) in [
        (a, 100),
        (a, 100),
        (c, 100),
        (a, 100),
        (a, 200),
        (a, 50),
        (a, 50),
    ] {
        assert!(b.push(dst, &vec![0; len]));
    }
    assert_eq!(b.prepare_send(0), 5);
    // a a | c | a | a(200) a(50): a shorter one ends a group | a(50)
    assert_eq!(&b.count[..5], &[2, 1, 1, 2, 1]);
    b.gso = false;
    assert_eq!(b.prepare_send(0), 7);
}

/// `push_with` queues what its closure wrote in place, nothing when it declines or
/// overflows the buffer, and refuses a full batch; `push` refuses a datagram over `max`.
#[test]
fn push_with_writes_in_place_and_declines_cleanly() {
    let mut b = Batch::new(1500);
    let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert!(b.push_with(a, |slot| {
        assert_eq!(slot.len(), 1500, "room is the datagram bound");
        slot[..3].copy_from_slice(b"abc");
        Some(3)
    }));
    assert!(!b.push_with(a, |_| None));
    assert!(!b.push_with(a, |slot| Some(slot.len() + 1)));
    assert!(!b.push(a, &[0; 1501]));
    assert_eq!(b.len, 1);
    assert_eq!(&b.bufs[..3], b"abc");
    assert_eq!(b.lens[0], 3);
    while b.len < BATCH {
        assert!(b.push(a, &[1; 10]));
    }
    assert!(b.is_full());
    assert!(!b.push_with(a, |_| panic!("not called on a full batch")));
}
