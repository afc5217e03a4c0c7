//! Raw boringtun rates on one core, in process: encrypt, decrypt, handshake responder.
//! These are the limits the gateway's numbers are compared with.

use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use sesame_bench::args::Args;
use sesame_bench::tunn::{pair, result, unlimited};
use sesame_bench::{keys, packet, sys};

fn main() -> anyhow::Result<()> {
    let args = Args::from_env()?;
    let secs: f64 = args.get("seconds", 3.0)?;
    let size: usize = args.get("size", 1420)?;
    let d = Duration::from_secs_f64(secs);
    data_rates(d, size)?;
    handshake_rates(d)?;
    Ok(())
}

fn data_rates(d: Duration, size: usize) -> anyhow::Result<()> {
    let (mut a, mut b) = pair(keys::random(), keys::random())?;
    let mut inner = vec![0u8; size];
    packet::udp4(
        &mut inner,
        size,
        keys::address(1),
        [198, 18, 2, 2].into(),
        1000,
        2000,
        0,
    );
    let stride = size + 32;
    let pool_len = 100_000;
    let mut pool = vec![0u8; stride * pool_len];
    let mut out = vec![0u8; stride];

    // Encrypt: time only the encapsulate calls.
    let mut enc_time = Duration::ZERO;
    let mut enc_n = 0u64;
    while enc_time < d {
        let t = Instant::now();
        for slot in pool.chunks_mut(stride) {
            if !matches!(a.encapsulate(&inner, slot), TunnResult::WriteToNetwork(_)) {
                anyhow::bail!("encapsulate failed");
            }
        }
        enc_time += t.elapsed();
        enc_n += pool_len as u64;
    }
    let bits = (size * 8) as f64;
    result(
        "raw_encrypt_gbps",
        enc_n as f64 * bits / enc_time.as_secs_f64() / 1e9,
        "Gbit/s",
    );

    // Decrypt: re-encrypt the pool (fresh counters, untimed), then time the decapsulate calls.
    let mut dec_time = Duration::ZERO;
    let mut dec_cpu = Duration::ZERO;
    let mut dec_n = 0u64;
    while dec_time < d {
        for slot in pool.chunks_mut(stride) {
            let _ = a.encapsulate(&inner, slot);
        }
        let (t, c) = (Instant::now(), sys::thread_cpu());
        for slot in pool.chunks(stride) {
            match b.decapsulate(None, slot, &mut out) {
                TunnResult::WriteToTunnelV4(..) => dec_n += 1,
                r => anyhow::bail!("decapsulate: {r:?}"),
            }
        }
        dec_time += t.elapsed();
        dec_cpu += sys::thread_cpu().saturating_sub(c);
    }
    let pps = dec_n as f64 / dec_time.as_secs_f64();
    result("raw_decrypt_pps", pps, "packets/s");
    result("raw_decrypt_gbps", pps * bits / 1e9, "Gbit/s");
    // Per CPU second of this thread: what one core decrypts when it is not shared.
    result(
        "raw_decrypt_cpu_pps",
        dec_n as f64 / dec_cpu.as_secs_f64().max(1e-9),
        "packets per CPU second",
    );
    Ok(())
}

fn handshake_rates(d: Duration) -> anyhow::Result<()> {
    // Initiations are generated before the clock starts; the responder's limiter never cookies.
    let gw = keys::random().to_dalek();
    let gw_pub = PublicKey::from(&gw);
    let n_init = 64usize;
    let per = 200usize;
    let mut inits: Vec<(usize, Vec<u8>)> = Vec::with_capacity(n_init * per);
    let mut initiators = Vec::new();
    let mut responders = Vec::new();
    let mut publics = Vec::new();
    for i in 0..n_init {
        let k = keys::random().to_dalek();
        let p = PublicKey::from(&k);
        publics.push(p);
        initiators.push(Tunn::new(
            k,
            gw_pub,
            None,
            None,
            i as u32,
            Some(unlimited(&p)),
        ));
        responders.push(Tunn::new(
            gw.clone(),
            p,
            None,
            None,
            i as u32,
            Some(unlimited(&gw_pub)),
        ));
    }
    let mut buf = [0u8; 256];
    let t = Instant::now();
    for _ in 0..per {
        for (i, t) in initiators.iter_mut().enumerate() {
            match t.format_handshake_initiation(&mut buf, true) {
                TunnResult::WriteToNetwork(p) => inits.push((i, p.to_vec())),
                r => anyhow::bail!("initiation: {r:?}"),
            }
        }
    }
    let rate = inits.len() as f64 / t.elapsed().as_secs_f64();
    result("raw_initiation_per_s", rate, "initiations/s");
    // Tunn alone (the responder knows its peer).
    let mut n = 0u64;
    let t = Instant::now();
    for (i, m) in &inits {
        if let TunnResult::WriteToNetwork(_) = responders[*i].decapsulate(None, m, &mut buf) {
            n += 1;
        }
        if t.elapsed() > d {
            break;
        }
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    result("raw_handshake_per_s", rate, "handshakes/s");

    // Anonymous parse to find the peer, then the Tunn: what a many-peer gateway must do.
    for (i, r) in responders.iter_mut().enumerate() {
        *r = Tunn::new(
            gw.clone(),
            publics[i],
            None,
            None,
            i as u32,
            Some(unlimited(&gw_pub)),
        );
    }
    let mut n = 0u64;
    let t = Instant::now();
    for (i, m) in &inits {
        if let Ok(Packet::HandshakeInit(h)) = Tunn::parse_incoming_packet(m) {
            if parse_handshake_anon(&gw, &gw_pub, &h).is_ok() {
                if let TunnResult::WriteToNetwork(_) = responders[*i].decapsulate(None, m, &mut buf)
                {
                    n += 1;
                }
            }
        }
        if t.elapsed() > d {
            break;
        }
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    result("raw_handshake_anon_parse_per_s", rate, "handshakes/s");
    Ok(())
}
