//! A small boringtun "laptop": one TUN, one UDP socket, one Tunn, batched I/O, one or two threads.
//! Stands in for the sesame agent in the pair benchmark; exits by itself after `--seconds`.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use sesame_bench::args::Args;
use sesame_bench::keys;
use sesame_bench::sys::{self, RecvBatch, BATCH};

struct Shared {
    tunn: Mutex<Tunn>,
    tun: File,
    udp: UdpSocket,
    stop: AtomicBool,
    mtu: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::from_env()?;
    let name: String = args.req("tun")?;
    let address: String = args.req("address")?;
    let mtu: usize = args.get("mtu", 1420)?;
    let listen: SocketAddr = args.req("listen")?;
    let endpoint: SocketAddr = args.req("endpoint")?;
    let threads: usize = args.get("threads", 2)?;
    let seconds: u64 = args.get("seconds", 600)?;
    let secret = keys::secret(args.req("key-seed")?, args.req("key-index")?);
    let gw = PublicKey::from(keys::decode(&args.req::<String>("peer-public-key")?)?);

    let tun = sys::tun(&name)?;
    sys::ip(&["addr", "add", &address, "dev", &name])?;
    sys::ip(&["link", "set", &name, "mtu", &mtu.to_string(), "up"])?;
    for route in args.str("routes").unwrap_or("").split(',') {
        if !route.is_empty() {
            sys::ip(&["route", "add", route, "dev", &name])?;
        }
    }
    let udp = sys::udp(listen, endpoint, Duration::from_millis(50))?;
    let tunn = Tunn::new(secret, gw, None, None, 1, None);
    let sh = Arc::new(Shared {
        tunn: Mutex::new(tunn),
        tun,
        udp,
        stop: AtomicBool::new(false),
        mtu,
    });

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    if threads >= 2 {
        let s = sh.clone();
        handles.push(std::thread::spawn(move || worker(&s, true, false)));
        let s = sh.clone();
        handles.push(std::thread::spawn(move || worker(&s, false, true)));
    } else {
        let s = sh.clone();
        handles.push(std::thread::spawn(move || worker(&s, true, true)));
    }
    while Instant::now() < deadline && !handles.iter().any(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
    }
    sh.stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Moves packets TUN→UDP (`tun_side`) and/or UDP→TUN plus timers (`udp_side`) until stopped.
fn worker(sh: &Shared, tun_side: bool, udp_side: bool) {
    let stride = sh.mtu + 64;
    let mut tin = vec![0u8; stride * BATCH];
    let mut tin_len = [0usize; BATCH];
    let mut out = vec![0u8; stride * BATCH];
    let mut out_len = [0usize; BATCH];
    let mut ctl = vec![0u8; stride];
    let mut rx = RecvBatch::new(stride);
    let (tfd, ufd) = (sh.tun.as_raw_fd(), sh.udp.as_raw_fd());
    let mut next_timer = Instant::now();

    while !sh.stop.load(Ordering::Relaxed) {
        let ready = match (tun_side, udp_side) {
            (true, true) => sys::poll_read([tfd, ufd], Duration::from_millis(50)),
            (true, false) => {
                let [t] = sys::poll_read([tfd], Duration::from_millis(50));
                [t, false]
            }
            _ => {
                let [u] = sys::poll_read([ufd], Duration::from_millis(50));
                [false, u]
            }
        };
        if ready[0] {
            // TUN → encrypt → UDP, one lock and one sendmmsg per batch.
            let mut n = 0;
            while n < BATCH {
                let slot = &mut tin[n * stride..(n + 1) * stride];
                // SAFETY: reads into a live buffer of the given length.
                let r = unsafe { libc::read(tfd, slot.as_mut_ptr().cast(), slot.len()) };
                if r <= 0 {
                    break;
                }
                tin_len[n] = r as usize;
                n += 1;
            }
            let mut m = 0;
            if let Ok(mut t) = sh.tunn.lock() {
                for i in 0..n {
                    let src = &tin[i * stride..i * stride + tin_len[i]];
                    let dst = &mut out[m * stride..(m + 1) * stride];
                    if let TunnResult::WriteToNetwork(p) = t.encapsulate(src, dst) {
                        out_len[m] = p.len();
                        m += 1;
                    }
                }
            }
            let mut pk: [&[u8]; BATCH] = [&[]; BATCH];
            for (i, p) in pk.iter_mut().enumerate().take(m) {
                *p = &out[i * stride..i * stride + out_len[i]];
            }
            sys::send_all(ufd, &pk[..m]);
        }
        if ready[1] {
            // UDP → decrypt → TUN, one lock per batch; handshake replies go out at once.
            let n = rx.recv(ufd, false);
            let mut m = 0;
            if let Ok(mut t) = sh.tunn.lock() {
                for i in 0..n {
                    let d = rx.get(i);
                    let dst = &mut out[m * stride..(m + 1) * stride];
                    match t.decapsulate(None, d, dst) {
                        TunnResult::WriteToTunnelV4(p, _) => {
                            out_len[m] = p.len();
                            m += 1;
                        }
                        TunnResult::WriteToNetwork(p) => {
                            let _ = sh.udp.send(p);
                            while let TunnResult::WriteToNetwork(p) =
                                t.decapsulate(None, &[], &mut ctl)
                            {
                                let _ = sh.udp.send(p);
                            }
                        }
                        _ => {}
                    }
                }
            }
            for i in 0..m {
                // SAFETY: writes a live buffer of the given length.
                unsafe { libc::write(tfd, out[i * stride..].as_ptr().cast(), out_len[i]) };
            }
        }
        if udp_side && Instant::now() >= next_timer {
            next_timer = Instant::now() + Duration::from_millis(100);
            if let Ok(mut t) = sh.tunn.lock() {
                if let TunnResult::WriteToNetwork(p) = t.update_timers(&mut ctl) {
                    let _ = sh.udp.send(p);
                }
            }
        }
    }
}
