//! Cost of flow auditing: the gateway engine with flow and session records on vs off, same run.
//!
//! In process, no syscalls: N boringtun laptops handshake with two engines (one with a
//! `FlowLog`, one without); each round pre-encrypts a pool of data packets (untimed), then times
//! the engine's path datagram → decrypt → anti-spoof → policy → conntrack (→ flow tables when on),
//! alternating off/on rounds so both see the same machine load, timed in thread CPU time. With the audit on, each round
//! ends with a window flush into the queue, drained by a consumer thread as `sesame serve` does.
//! A share of the packets can be denied (`--denied-pct`, to distinct destinations) to load the
//! denied tables too. Socket and TUN I/O cost the same in both modes, so the ratio here is an
//! upper bound of the cost in end-to-end forwarding.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use sesame::gateway::engine::{Output, TIMER_PERIOD};
use sesame::gateway::flowlog::{WorkerFlows, DEFAULT_QUEUE};
use sesame::gateway::{Engine, FlowLog, PeerSpec};
use sesame::policy::{Rule, RuleSet};
use sesame::time::now_ms;
use sesame_bench::args::Args;
use sesame_bench::sys::thread_cpu;
use sesame_bench::tunn::result;
use sesame_bench::{keys, packet};

/// Counts packets the engine passes to the TUN side; sends nothing.
struct Sink {
    tun: u64,
    flows: Option<WorkerFlows>,
}

impl Output for Sink {
    fn to_network(&mut self, _dst: SocketAddr, _datagram: &[u8]) {}
    fn to_tun(&mut self, _packet: &[u8]) {
        self.tun += 1;
    }
    fn flows(&mut self) -> Option<&mut WorkerFlows> {
        self.flows.as_mut()
    }
}

struct Side {
    engine: Engine,
    laptops: Vec<(Tunn, SocketAddr, Ipv4Addr)>,
    sink: Sink,
    pps: Vec<f64>,
}

fn side(audit: bool, peers: u32) -> anyhow::Result<Side> {
    let gw = keys::random();
    let gw_public = gw.public_key().to_dalek();
    let mut engine = Engine::new(gw, Duration::from_secs(120));
    let mut flows = None;
    if audit {
        let (log, rx) = FlowLog::new(Duration::from_secs(60), DEFAULT_QUEUE);
        // The writer's side: drains the queue (as the consumer task does).
        std::thread::spawn(move || while rx.recv().is_ok() {});
        flows = Some(WorkerFlows::new(Arc::clone(&log), Instant::now(), now_ms()));
        engine = engine.with_flow_log(log);
    }
    let rules = RuleSet::with_origins([("198.18.2.0/24".parse::<Rule>()?, 0)]);
    let mut specs = Vec::new();
    let mut laptops = Vec::new();
    for i in 0..peers {
        let secret = keys::secret(7, i);
        let address = keys::address(i);
        specs.push(PeerSpec {
            public_key: keys::public(&secret),
            address,
            rules: rules.clone(),
            protected: Default::default(),
            mfa_until_ms: None,
            label: format!("device:{i}:bench{i}"),
            persistent_keepalive: None,
        });
        let from = SocketAddr::from((Ipv4Addr::from(0xC612_0400 + i), 51821));
        laptops.push((
            Tunn::new(secret.to_dalek(), gw_public, None, None, i, None),
            from,
            address,
        ));
    }
    engine.peers.set(specs);
    let mut sink = Sink { tun: 0, flows };
    let mut scratch = vec![0u8; 4096];
    let mut buf = vec![0u8; 4096];
    // Handshakes, spread in (engine) time so the handshake limiter stays below load.
    let mut now = Instant::now();
    for (tunn, from, _) in &mut laptops {
        now += TIMER_PERIOD * 2;
        engine.tick(now, &mut scratch, &mut sink);
        let init = match tunn.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            r => anyhow::bail!("initiation: {r:?}"),
        };
        let mut got = Capture(None);
        engine.handle_datagram(now, *from, &init, &mut scratch, &mut got);
        let resp = got
            .0
            .ok_or_else(|| anyhow::anyhow!("no handshake response"))?;
        match tunn.decapsulate(None, &resp, &mut buf) {
            TunnResult::WriteToNetwork(k) => {
                let k = k.to_vec();
                engine.handle_datagram(now, *from, &k, &mut scratch, &mut sink);
            }
            r => anyhow::bail!("handshake completion: {r:?}"),
        }
    }
    Ok(Side {
        engine,
        laptops,
        sink,
        pps: Vec::new(),
    })
}

/// Captures the handshake response.
struct Capture(Option<Vec<u8>>);

impl Output for Capture {
    fn to_network(&mut self, _dst: SocketAddr, datagram: &[u8]) {
        self.0 = Some(datagram.to_vec());
    }
    fn to_tun(&mut self, _packet: &[u8]) {}
}

/// One round: encrypt `pool` packets (untimed), then time the engine on them.
fn round(s: &mut Side, pool: usize, size: usize, denied_pct: u32, round: u32) -> f64 {
    let stride = size + 64;
    let mut enc = vec![0u8; stride * pool];
    let mut lens = Vec::with_capacity(pool);
    let mut inner = vec![0u8; size];
    let n = s.laptops.len();
    for (i, slot) in enc.chunks_mut(stride).enumerate() {
        let (tunn, _, src) = &mut s.laptops[i % n];
        let denied = (i as u32 * 100 / pool as u32) % 100 < denied_pct;
        let dst = if denied {
            // Distinct destinations outside the grant (198.18.64.0/18), new each round.
            Ipv4Addr::from(0xC612_4000 + (round * pool as u32 + i as u32) % 16_384)
        } else {
            Ipv4Addr::new(198, 18, 2, 2)
        };
        packet::udp4(
            &mut inner,
            size,
            *src,
            dst,
            1000,
            5000 + (i % 16) as u16,
            i as u64,
        );
        match tunn.encapsulate(&inner, slot) {
            TunnResult::WriteToNetwork(d) => lens.push(d.len()),
            _ => lens.push(0),
        }
    }
    let mut scratch = vec![0u8; stride + 256];
    let before = s.sink.tun;
    let now = Instant::now();
    let t = thread_cpu();
    for (i, slot) in enc.chunks(stride).enumerate() {
        let from = s.laptops[i % n].1;
        s.engine
            .handle_datagram(now, from, &slot[..lens[i]], &mut scratch, &mut s.sink);
    }
    if let Some(f) = s.sink.flows.as_mut() {
        // A window ends at each round: the flush is part of the cost.
        f.roll(Instant::now(), now_ms());
    }
    let secs = (thread_cpu() - t).as_secs_f64();
    let allowed = pool as u64 * u64::from(100 - denied_pct) / 100;
    debug_assert!(s.sink.tun - before >= allowed.saturating_sub(pool as u64 / 50));
    pool as f64 / secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::from_env()?;
    let rounds: u32 = args.get("rounds", 10)?;
    let peers: u32 = args.get("peers", 100)?;
    let pool: usize = args.get("pool", 50_000)?;
    let denied_pct: u32 = args.get::<u32>("denied-pct", 0)?.min(100);
    let sizes = [1420usize, 128];
    for size in sizes {
        let mut off = side(false, peers)?;
        let mut on = side(true, peers)?;
        for r in 0..rounds {
            // Alternate which goes first, so a load change hits both alike.
            let (a, b) = if r % 2 == 0 {
                (&mut off, &mut on)
            } else {
                (&mut on, &mut off)
            };
            let pa = round(a, pool, size, denied_pct, r);
            a.pps.push(pa);
            let pb = round(b, pool, size, denied_pct, r);
            b.pps.push(pb);
        }
        let (off_pps, on_pps) = (median(&mut off.pps), median(&mut on.pps));
        let tag = format!("flow_audit_{size}");
        result(&format!("{tag}_off_pps"), off_pps, "packets/s");
        result(&format!("{tag}_on_pps"), on_pps, "packets/s");
        result(
            &format!("{tag}_cost_pct"),
            (1.0 - on_pps / off_pps) * 100.0,
            "%",
        );
        result(
            &format!("{tag}_forwarded_on"),
            on.sink.tun as f64,
            "packets",
        );
    }
    Ok(())
}
