//! Load generator: N boringtun peers against a gateway. Modes:
//! `keys` / `toml` print the deterministic peer keys (for configs), `blast` handshakes every peer
//! then sends pre-encrypted datagrams (sendmmsg, with UDP GSO unless `--gso false`) and counts
//! what reaches the resource namespace (with `--cpu-pid PID`, also the packets delivered per CPU
//! second of that process while the data flows),
//! `handshake` measures handshakes answered per second. Every loop is bounded in count and time.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::bail;
use boringtun::noise::{Tunn, TunnResult};
use sesame::key::PublicKey;
use sesame_bench::args::Args;
use sesame_bench::sys::{self, RecvBatch, BATCH};
use sesame_bench::tunn::{msg_type, receiver_idx, result};
use sesame_bench::{keys, packet};

fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let args = Args::parse(std::env::args().skip(2))?;
    match mode.as_str() {
        "keys" => print_keys(&args),
        "toml" => print_toml(&args),
        "blast" => blast(&args),
        "handshake" => handshake(&args),
        _ => bail!("usage: loadgen keys|toml|blast|handshake --flags…"),
    }
}

#[allow(clippy::print_stdout)]
fn print_keys(args: &Args) -> anyhow::Result<()> {
    let seed: u64 = args.req("seed")?;
    let first: u32 = args.get("first", 0)?;
    let count: u32 = args.get("count", 1)?;
    for i in first..first + count {
        let s = keys::secret(seed, i);
        println!(
            "{i} {} {} {}",
            s.to_base64(),
            keys::public(&s),
            keys::address(i)
        );
    }
    Ok(())
}

/// `[[peer]]` blocks for a sesame config: peers `first..first+count` of `seed`.
fn print_toml(args: &Args) -> anyhow::Result<()> {
    let seed: u64 = args.req("seed")?;
    let first: u32 = args.get("first", 0)?;
    let count: u32 = args.get("count", 1)?;
    let resource: String = args.get("resource", "bench".to_string())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in first..first + count {
        let s = keys::secret(seed, i);
        writeln!(
            out,
            "[[peer]]\nname = \"lg{i}\"\npublic_key = \"{}\"\naddress = \"{}\"\nresources = [\"{resource}\"]\n",
            keys::public(&s),
            keys::address(i)
        )?;
    }
    Ok(())
}

struct Peers {
    tunns: Vec<Tunn>,
    up: Vec<bool>,
}

fn make_peers(args: &Args) -> anyhow::Result<Peers> {
    let seed: u64 = args.req("seed")?;
    let n: u32 = args.get("peers", 1)?;
    let gw = PublicKey::parse(&args.req::<String>("gateway-public-key")?)?.to_dalek();
    let tunns = (0..n)
        .map(|i| Tunn::new(keys::secret(seed, i).to_dalek(), gw, None, None, i, None))
        .collect::<Vec<_>>();
    Ok(Peers {
        up: vec![false; tunns.len()],
        tunns,
    })
}

/// Where handshakes come from: `--sources` consecutive addresses from `--source-base` (the
/// gateway limits handshakes per source address), on one socket bound to `--port`.
struct Sources {
    udp: UdpSocket,
    base: Ipv4Addr,
    count: u32,
    gateway: SocketAddrV4,
}

impl Sources {
    fn new(args: &Args) -> anyhow::Result<Sources> {
        Ok(Sources {
            udp: sys::udp_any(args.get("port", 51899)?, Duration::from_millis(20))?,
            base: args.req("source-base")?,
            count: args.get::<u32>("sources", 1)?.max(1),
            gateway: args.req("gateway")?,
        })
    }

    /// Peer `i` always speaks from the same source, so its cookie stays valid.
    fn of(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + (i as u32 % self.count))
    }
}

/// Handshakes every peer (initiations in batches, cookies honoured), within 30 s.
fn handshake_all(p: &mut Peers, src: &Sources) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let fd = src.udp.as_raw_fd();
    let mut slots = vec![0u8; 256 * BATCH];
    let mut rx = RecvBatch::new(2048);
    let mut buf = vec![0u8; 2048];
    while t0.elapsed() < Duration::from_secs(30) {
        let pending: Vec<usize> = (0..p.tunns.len()).filter(|&i| !p.up[i]).collect();
        if pending.is_empty() {
            return Ok(t0.elapsed());
        }
        for chunk in pending.chunks(BATCH) {
            let mut lens = [0usize; BATCH];
            for (k, &i) in chunk.iter().enumerate() {
                let slot = &mut slots[k * 256..(k + 1) * 256];
                if let TunnResult::WriteToNetwork(m) =
                    p.tunns[i].format_handshake_initiation(slot, true)
                {
                    lens[k] = m.len();
                }
            }
            let pk: Vec<(&[u8], Ipv4Addr)> = chunk
                .iter()
                .enumerate()
                .map(|(k, &i)| (&slots[k * 256..k * 256 + lens[k]], src.of(i)))
                .collect();
            sys::send_from(fd, src.gateway, &pk);
            // Collect replies for a moment before the next batch, so a burst stays small.
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {
                let n = rx.recv(fd, true);
                for j in 0..n {
                    let d = rx.get(j);
                    let Some(idx) = receiver_idx(d) else { continue };
                    let i = (idx >> 8) as usize;
                    if i >= p.tunns.len() {
                        continue;
                    }
                    match p.tunns[i].decapsulate(None, d, &mut buf) {
                        TunnResult::WriteToNetwork(k) => {
                            // The keepalive that confirms the session to the gateway.
                            sys::send_from(fd, src.gateway, &[(&*k, src.of(i))]);
                            p.up[i] = true;
                        }
                        TunnResult::Done | TunnResult::WriteToTunnelV4(..) if msg_type(d) == 2 => {
                            p.up[i] = true;
                        }
                        _ => {}
                    }
                }
            }
        }
        // Peers not answered yet get a new initiation on the next round.
        if p.up.iter().any(|u| !*u) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    bail!(
        "only {} of {} peers completed their handshake in 30 s",
        p.up.iter().filter(|u| **u).count(),
        p.tunns.len()
    )
}

/// Received (frames, bytes) at the counting point: `--count-ns NS --count-iface IF`.
fn delivered(args: &Args) -> anyhow::Result<(u64, u64)> {
    let ns: String = args.req("count-ns")?;
    let iface: String = args.req("count-iface")?;
    sys::netns_iface_rx(&ns, &iface)
}

/// Inner packets of `size` bytes in `frames` Ethernet frames of `bytes` in all. A frame may be
/// a GSO super-packet (the gateway writes UDP runs to its TUN with USO and the kernel keeps
/// them whole across the veth): one set of Ethernet/IPv4/UDP headers (42 bytes) for all its
/// datagrams, so bytes = frames × 42 + packets × (size − 28).
fn inner_packets(frames: u64, bytes: u64, size: usize) -> u64 {
    bytes.saturating_sub(frames * 42) / (size.saturating_sub(28).max(1) as u64)
}

/// Packets per run from one peer (one connected socket): up to 4 GSO messages of 64.
const RUN: usize = 256;

/// `pool_len` datagrams of `size` inner bytes, pre-encrypted round-robin over the peers (runs of
/// [`RUN`] from one peer), each in a slot of `stride` bytes; with each datagram's length.
fn encrypt_pool(
    peers: &mut Peers,
    size: usize,
    stride: usize,
    pool_len: usize,
    dst: SocketAddrV4,
) -> anyhow::Result<(Vec<u8>, Vec<usize>)> {
    let n = peers.tunns.len();
    let mut pool = vec![0u8; stride * pool_len];
    let mut lens = vec![0usize; pool_len];
    let mut inner = vec![0u8; size];
    let owner = |k: usize| (k / RUN) % n;
    for (k, slot) in pool.chunks_mut(stride).enumerate() {
        let i = owner(k);
        let src: Ipv4Addr = keys::address(i as u32);
        packet::udp4(
            &mut inner,
            size,
            src,
            *dst.ip(),
            40000 + (i % 20000) as u16,
            dst.port(),
            k as u64,
        );
        match peers.tunns[i].encapsulate(&inner, slot) {
            TunnResult::WriteToNetwork(p) if msg_type(p) == 4 => lens[k] = p.len(),
            r => bail!("encapsulate for peer {i}: {r:?}"),
        }
    }
    Ok((pool, lens))
}

/// Waits until the delivered counter stops moving (the gateway drains its queue), at most 3 s:
/// the last count, and when it last changed.
fn settle(args: &Args) -> anyhow::Result<((u64, u64), Instant)> {
    let mut last = delivered(args)?;
    let mut last_change = Instant::now();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
        let d = delivered(args)?;
        if d != last {
            last = d;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_millis(200) {
            break;
        }
    }
    Ok((last, last_change))
}

/// The `RESULT` lines of a blast: sent, delivered, rates, and the gateway's CPU when counted.
fn report(
    tag: &str,
    size: usize,
    sent: usize,
    got: u64,
    send_time: Duration,
    secs: f64,
    cpu: Option<Duration>,
) {
    let rate = got as f64 / secs;
    result(&format!("{tag}_sent"), sent as f64, "packets");
    result(&format!("{tag}_delivered"), got as f64, "packets");
    result(
        &format!("{tag}_send_pps"),
        sent as f64 / send_time.as_secs_f64(),
        "packets/s",
    );
    result(&format!("{tag}_pps"), rate, "packets/s");
    result(
        &format!("{tag}_gbps"),
        rate * (size * 8) as f64 / 1e9,
        "Gbit/s",
    );
    if let Some(cpu) = cpu.filter(|c| !c.is_zero()) {
        result(&format!("{tag}_cpu_s"), cpu.as_secs_f64(), "s");
        result(
            &format!("{tag}_cpu_pps"),
            got as f64 / cpu.as_secs_f64(),
            "packets per CPU second",
        );
    }
}

fn blast(args: &Args) -> anyhow::Result<()> {
    let size: usize = args.get("size", 1420)?;
    let seconds: f64 = args.get("seconds", 3.0)?;
    let pool_max: usize = args.get("pool", 600_000)?;
    let pps: f64 = args.get("pps", 0.0)?;
    let dst: SocketAddrV4 = args.req("dst")?;
    let tag: String = args.get("tag", "blast".to_string())?;
    let mut gso: bool = args.get("gso", true)?;
    // The gateway's process: its CPU time is counted from the first data packet to the end,
    // so its share of the handshakes above is not charged to forwarding.
    let cpu_pid: u32 = args.get("cpu-pid", 0)?;
    let mut peers = make_peers(args)?;
    let sources = Sources::new(args)?;
    let hs = handshake_all(&mut peers, &sources)?;
    eprintln!(
        "loadgen: {} peers up in {:.2} s",
        peers.tunns.len(),
        hs.as_secs_f64()
    );

    // Pre-encrypt the pool, round-robin over the peers.
    let n = peers.tunns.len();
    let pool_len = if pps > 0.0 {
        ((pps * seconds) as usize + BATCH).min(pool_max.max(BATCH))
    } else {
        pool_max
    };
    let stride = size + 32;
    // Packets go out in runs of RUN from one peer: packet k belongs to peer (k / RUN) % n.
    let owner = |k: usize| (k / RUN) % n;
    let (pool, lens) = encrypt_pool(&mut peers, size, stride, pool_len, dst)?;
    let before = delivered(args)?;
    #[allow(clippy::print_stdout)]
    {
        println!("sending");
        std::io::stdout().flush()?;
    }
    let cpu0 = (cpu_pid > 0)
        .then(|| sys::process_cpu(cpu_pid))
        .transpose()?;
    // Each peer sends from its own source address, as separate laptops would: one connected
    // socket per source (no per-packet route lookup), one sendmmsg per run of RUN.
    let gw = std::net::SocketAddr::V4(sources.gateway);
    let conns = (0..n.min(sources.count as usize))
        .map(|s| {
            sys::udp(
                std::net::SocketAddr::new(sources.of(s).into(), 0),
                gw,
                Duration::from_millis(20),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let deadline = Duration::from_secs_f64(seconds);
    let mut sent = 0usize;
    let mut pk: Vec<&[u8]> = Vec::with_capacity(BATCH);
    while sent < pool_len && t0.elapsed() < deadline {
        let run_end = (sent / RUN + 1) * RUN;
        let mut want = pool_len.min(run_end) - sent;
        if pps > 0.0 {
            let target = (t0.elapsed().as_secs_f64() * pps) as usize;
            if target <= sent {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            want = want.min(target - sent);
        }
        pk.clear();
        pk.extend((sent..sent + want).map(|k| &pool[k * stride..k * stride + lens[k]]));
        let conn = &conns[owner(sent) % conns.len()];
        if gso {
            match sys::send_gso(conn.as_raw_fd(), &pk) {
                Some(n) => sent += n,
                None => {
                    eprintln!("loadgen: the kernel refused UDP GSO, sending without");
                    gso = false;
                }
            }
        } else {
            sent += sys::send_all(conn.as_raw_fd(), &pk);
        }
    }
    let send_time = t0.elapsed();
    let (last, last_change) = settle(args)?;
    let cpu = match cpu0 {
        Some(c0) => Some(sys::process_cpu(cpu_pid)?.saturating_sub(c0)),
        None => None,
    };
    let got = inner_packets(
        last.0.saturating_sub(before.0),
        last.1.saturating_sub(before.1),
        size,
    );
    let secs = (last_change - t0)
        .as_secs_f64()
        .max(send_time.as_secs_f64());
    report(&tag, size, sent, got, send_time, secs, cpu);
    Ok(())
}

/// Handshakes answered per second, with the client's crypto out of the timed part:
/// 1. every peer sends one initiation and keeps the cookie the gateway may answer with;
/// 2. `--per-peer` initiations per peer are built (carrying MAC2 from that cookie), untimed;
/// 3. they are sent with at most `--window` in flight; responses are counted.
///
/// Peers speak from `--sources` addresses (the gateway limits each source address).
fn handshake(args: &Args) -> anyhow::Result<()> {
    let seconds: f64 = args.get("seconds", 3.0)?;
    let window: usize = args.get("window", 256)?;
    let mut peers = make_peers(args)?;
    let src = Sources::new(args)?;
    let fd = src.udp.as_raw_fd();
    let n = peers.tunns.len();
    let per: usize = args.get("per-peer", ((6000.0 * seconds) as usize / n).clamp(2, 200))?;
    let mut rx = RecvBatch::new(2048);
    let mut buf = vec![0u8; 2048];

    // 1. Prime: one initiation each; a cookie reply is stored by the peer's Tunn.
    let mut primed = vec![false; n];
    let t_prime = Instant::now();
    while primed.iter().any(|p| !*p) && t_prime.elapsed() < Duration::from_secs(5) {
        let pending: Vec<usize> = (0..n).filter(|&i| !primed[i]).collect();
        for chunk in pending.chunks(BATCH) {
            let mut msgs: Vec<(Vec<u8>, Ipv4Addr)> = Vec::with_capacity(BATCH);
            for &i in chunk {
                if let TunnResult::WriteToNetwork(m) =
                    peers.tunns[i].format_handshake_initiation(&mut buf, true)
                {
                    msgs.push((m.to_vec(), src.of(i)));
                }
            }
            let pk: Vec<(&[u8], Ipv4Addr)> = msgs.iter().map(|(m, a)| (&m[..], *a)).collect();
            sys::send_from(fd, src.gateway, &pk);
            let until = Instant::now() + Duration::from_millis(30);
            while Instant::now() < until {
                for j in 0..rx.recv(fd, true) {
                    let d = rx.get(j);
                    let Some(i) = receiver_idx(d).map(|x| (x >> 8) as usize) else {
                        continue;
                    };
                    // Only a cookie primes a peer: a plain response means the gateway is not
                    // under load yet, and the next round will push it there.
                    if i < n && msg_type(d) == 3 {
                        let _ = peers.tunns[i].decapsulate(None, d, &mut buf);
                        primed[i] = true;
                    }
                }
            }
        }
    }
    eprintln!(
        "loadgen: {} of {n} peers hold a cookie after {:.2} s",
        primed.iter().filter(|p| **p).count(),
        t_prime.elapsed().as_secs_f64()
    );
    // 2. Build the initiations, untimed, peer after peer in rounds (timestamps increase per peer).
    let mut inits: Vec<(Vec<u8>, Ipv4Addr)> = Vec::with_capacity(n * per);
    for _ in 0..per {
        for (i, t) in peers.tunns.iter_mut().enumerate() {
            if let TunnResult::WriteToNetwork(m) = t.format_handshake_initiation(&mut buf, true) {
                inits.push((m.to_vec(), src.of(i)));
            }
        }
    }
    // 3. Send with a bounded window; count what comes back.
    let (mut sent, mut responses, mut cookies, mut outstanding) = (0usize, 0usize, 0usize, 0usize);
    let t0 = Instant::now();
    let mut last_reply = t0;
    let deadline = Duration::from_secs_f64(seconds.max(1.0) * 3.0);
    while t0.elapsed() < deadline {
        if sent < inits.len() && outstanding + BATCH <= window {
            let end = (sent + BATCH).min(inits.len());
            let pk: Vec<(&[u8], Ipv4Addr)> =
                inits[sent..end].iter().map(|(m, a)| (&m[..], *a)).collect();
            let k = sys::send_from(fd, src.gateway, &pk);
            sent += k;
            outstanding += k;
        }
        let wait = sent >= inits.len() || outstanding + BATCH > window;
        let got = rx.recv(fd, wait);
        if got == 0 && wait {
            // Nothing came back within the socket timeout: the rest in flight were dropped.
            outstanding = 0;
            if sent >= inits.len() {
                break;
            }
        }
        for j in 0..got {
            last_reply = Instant::now();
            outstanding = outstanding.saturating_sub(1);
            match msg_type(rx.get(j)) {
                2 => responses += 1,
                3 => cookies += 1,
                _ => {}
            }
        }
    }
    let secs = last_reply.duration_since(t0).as_secs_f64().max(1e-3);
    eprintln!(
        "loadgen: {} initiations built ({per} per peer), {sent} sent, {responses} responses, {cookies} cookies in {secs:.2} s",
        inits.len()
    );
    result("handshake_sent_per_s", sent as f64 / secs, "initiations/s");
    result("handshake_per_s", responses as f64 / secs, "handshakes/s");
    result(
        "handshake_cookie_per_s",
        cookies as f64 / secs,
        "cookie replies/s",
    );
    Ok(())
}
