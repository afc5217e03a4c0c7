//! 10,000 enrolled peers in one in-process sesame gateway: RSS per idle and per active peer, and
//! the time of `set_peers` adding one peer while the load generator's traffic flows (with loss),
//! and of the single-peer calls `upsert_peer` / `remove_peer`. Beside RSS, the heap the allocator
//! handed out (glibc's mallinfo2) splits what the peers hold from the allocator's overhead.
//! Run inside the gateway namespace; the load generator runs in `--laptop-ns`, the UDP sink in a
//! thread moved into `--resource-ns`.

use std::io::{BufRead as _, BufReader, Lines};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sesame::config::Config;
use sesame::gateway::{Gateway, GatewayHandle, PeerSpec};
use sesame::policy::{Rule, RuleSet};
use sesame_bench::args::Args;
use sesame_bench::keys;
use sesame_bench::sys;
use sesame_bench::tunn::result;

const SEED: u64 = 3;
const SINK: &str = "198.18.2.2:5999";

fn main() -> anyhow::Result<()> {
    let args = Args::from_env()?;
    let n: u32 = args.get("peers", 10_000)?;
    let active: u32 = args.get("active", 1000)?;
    let seconds: u64 = args.get("seconds", 5)?;
    let listen: SocketAddr = args.req("listen")?;
    let iface: String = args.req("interface")?;
    let laptop_ns: String = args.req("laptop-ns")?;
    let resource_ns: String = args.req("resource-ns")?;
    let loadgen: String = args.req("loadgen")?;
    let pps: u64 = args.get("pps", 20_000)?;
    // More add/remove rounds after the first add, for a median (and for a profiler).
    let rounds: u32 = args.get("rounds", 9)?;
    let sources: u32 = args.get("sources", 1000)?;

    let (config, rules) = gateway_config(listen, &iface)?;
    let spec = |i: u32| PeerSpec {
        public_key: keys::public(&keys::secret(SEED, i)),
        address: keys::address(i),
        rules: rules.clone(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: format!("peer{i}"),
        persistent_keepalive: None,
    };
    // Everything the harness itself holds is allocated before the first RSS reading.
    let specs: Vec<PeerSpec> = (0..n).map(spec).collect();
    let plus_one: Vec<PeerSpec> = (0..=n).map(spec).collect();
    let plus_one_again = plus_one.clone();
    let expect = (pps * seconds) as usize + 1024;
    let (sink_count, sink_stop, sink_join) = sink(&resource_ns, expect)?;

    let secret = keys::random();
    let gw_pub = secret.public_key();
    let gw = Gateway::start(&config.gateway, secret).context("starting the gateway")?;
    let handle = gw.handle();
    handle.set_peers(Vec::new());
    std::thread::sleep(Duration::from_millis(300));
    let (rss0, heap0) = (sys::rss_kib(), heap_bytes());
    handle.set_peers(specs.clone());
    std::thread::sleep(Duration::from_millis(500));
    let (rss1, heap1) = (sys::rss_kib(), heap_bytes());
    let idle = (rss1.saturating_sub(rss0)) as f64 / f64::from(n);
    let idle_heap = heap1.saturating_sub(heap0) as f64 / 1024.0 / f64::from(n);
    result("idle_kib_per_peer", idle, "KiB");
    result("idle_heap_kib_per_peer", idle_heap, "KiB");

    // Traffic from `active` of those peers, paced, for `seconds`; the sink only sees it.
    let before = sink_count.load(Ordering::Relaxed);
    let (mut child, lines) = start_load(
        &laptop_ns,
        &loadgen,
        &resource_ns,
        listen,
        &gw_pub,
        sources,
        active,
        pps,
        seconds,
    )?;
    let sending = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let (rss2, heap2) = (sys::rss_kib(), heap_bytes());
    let sessions = handle
        .peer_stats()
        .iter()
        .filter(|s| s.session_active)
        .count();
    let per_active = idle + rss2.saturating_sub(rss1) as f64 / f64::from(active.max(1));
    result("active_sessions", sessions as f64, "peers");
    result("active_kib_per_peer", per_active, "KiB");
    let active_heap =
        idle_heap + heap2.saturating_sub(heap1) as f64 / 1024.0 / f64::from(active.max(1));
    result("active_heap_kib_per_peer", active_heap, "KiB");

    std::thread::sleep(Duration::from_millis(700));
    let changes = Changes {
        n,
        spec: &spec,
        specs: &specs,
        plus_one,
        plus_one_again: &plus_one_again,
        rounds,
    };
    let add_at = time_peer_changes(&handle, changes, sending)?;

    let sent = sent_of(lines)?;
    let _ = child.wait();
    let (last, seen) = drain(&sink_count, &sink_stop, sink_join)?;
    let Some(sent) = sent else {
        bail!("the load generator did not report what it sent");
    };
    let got = last.saturating_sub(before) as f64;
    report_losses(&seen, sent, got, pps, add_at);
    eprintln!(
        "peers10k: gateway drops: {}",
        sesame::gateway::format_drops(&handle.drop_counters())
    );
    gw.shutdown();
    Ok(())
}

/// The gateway's configuration (no key file: the key is made here) and every peer's rules.
fn gateway_config(listen: SocketAddr, iface: &str) -> anyhow::Result<(Config, RuleSet)> {
    let text = format!(
        "[gateway]\nlisten = \"{listen}\"\nendpoint = \"{listen}\"\ninterface = \"{iface}\"\n\
         tunnel_network = \"100.64.0.0/16\"\nprivate_key_file = \"/nonexistent/peers10k.key\"\n"
    );
    let config = Config::parse(std::path::Path::new("peers10k.toml"), &text)?;
    let rules = RuleSet::new(["198.18.2.0/24 any"
        .parse::<Rule>()
        .map_err(|e| anyhow::anyhow!("{e}"))?]);
    Ok((config, rules))
}

/// Starts the load generator in the laptop namespace and waits until it says "sending".
#[allow(clippy::too_many_arguments)]
fn start_load(
    laptop_ns: &str,
    loadgen: &str,
    resource_ns: &str,
    listen: SocketAddr,
    gw_pub: &sesame::key::PublicKey,
    sources: u32,
    active: u32,
    pps: u64,
    seconds: u64,
) -> anyhow::Result<(Child, Lines<BufReader<ChildStdout>>)> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", laptop_ns, loadgen, "blast"])
        .args([
            "--gateway",
            &listen.to_string(),
            "--gateway-public-key",
            &gw_pub.to_base64(),
        ])
        .args([
            "--bind",
            "198.18.0.2:0",
            "--source-base",
            "198.18.4.1",
            "--sources",
            &sources.to_string(),
            "--seed",
            &SEED.to_string(),
            "--peers",
            &active.to_string(),
        ])
        .args([
            "--size",
            "200",
            "--pps",
            &pps.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .args([
            "--dst",
            SINK,
            "--count-ns",
            resource_ns,
            "--count-iface",
            "lo",
            "--tag",
            "big",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the load generator")?;
    let out = child.stdout.take().context("load generator stdout")?;
    let mut lines = BufReader::new(out).lines();
    let mut started = false;
    for line in lines.by_ref() {
        if line?.trim() == "sending" {
            started = true;
            break;
        }
    }
    if !started {
        let _ = child.wait();
        bail!("the load generator stopped before sending");
    }
    Ok((child, lines))
}

/// What [`time_peer_changes`] changes: the peer set, one more peer, and the rounds.
struct Changes<'a, F: Fn(u32) -> PeerSpec> {
    n: u32,
    spec: &'a F,
    specs: &'a Vec<PeerSpec>,
    plus_one: Vec<PeerSpec>,
    plus_one_again: &'a Vec<PeerSpec>,
    rounds: u32,
}

/// Times adding one peer with `set_peers` (and freeing such a list), the single-peer calls,
/// then `rounds` removals and additions; returns when the first addition happened, in seconds
/// after `sending`.
fn time_peer_changes<F: Fn(u32) -> PeerSpec>(
    handle: &GatewayHandle,
    c: Changes<'_, F>,
    sending: Instant,
) -> anyhow::Result<f64> {
    let Changes {
        n,
        spec,
        specs,
        plus_one,
        plus_one_again,
        rounds,
    } = c;
    // What freeing a desired list of that size costs alone (set_peers frees the one it takes).
    let copy = plus_one.clone();
    let t = Instant::now();
    drop(copy);
    let free = t.elapsed();
    let t = Instant::now();
    handle.set_peers(plus_one);
    let add = t.elapsed();
    let add_at = t.duration_since(sending).as_secs_f64();
    result("add_peer_ms", add.as_secs_f64() * 1e3, "ms");
    result("free_specs_ms", free.as_secs_f64() * 1e3, "ms");
    // The same change as the control plane's single-peer call: one more peer, then it goes.
    std::thread::sleep(Duration::from_millis(300));
    let extra = spec(n + 1);
    let extra_key = extra.public_key;
    let t = Instant::now();
    let upserted = handle.upsert_peer(extra);
    let upsert = t.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let removed = handle.remove_peer(&extra_key);
    let remove = t.elapsed();
    if !(upserted && removed) {
        bail!("upsert_peer/remove_peer did not apply");
    }
    result("upsert_peer_ms", upsert.as_secs_f64() * 1e3, "ms");
    result("remove_peer_ms", remove.as_secs_f64() * 1e3, "ms");
    // set_peers taking the added peer out again, then adding it back, `rounds` times while the
    // traffic goes on (each desired list is built before the clock starts).
    let (mut adds, mut removes) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (list, times) in [(specs, &mut removes), (plus_one_again, &mut adds)] {
            let desired = list.clone();
            let t = Instant::now();
            handle.set_peers(desired);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    if rounds > 0 {
        result("add_peer_median_ms", median(&mut adds), "ms");
        result("remove_peer_median_ms", median(&mut removes), "ms");
    }

    Ok(add_at)
}

/// What the load generator reports it sent (its `RESULT big_sent` line), once it is done.
fn sent_of(lines: Lines<BufReader<ChildStdout>>) -> anyhow::Result<Option<f64>> {
    let mut sent = None;
    for line in lines {
        let line = line?;
        if let Some(v) = line.strip_prefix("RESULT big_sent ") {
            sent = v
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok());
        }
    }
    Ok(sent)
}

/// Lets the sink drain, stops it: its last count and which sequence numbers it saw.
fn drain(
    sink_count: &AtomicU64,
    sink_stop: &AtomicBool,
    sink_join: SinkJoin,
) -> anyhow::Result<(u64, Vec<bool>)> {
    let mut last = sink_count.load(Ordering::Relaxed);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = sink_count.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    sink_stop.store(true, Ordering::Relaxed);
    let seen = sink_join
        .join()
        .map_err(|_| anyhow::anyhow!("sink thread panicked"))?;
    Ok((last, seen))
}

/// Packet k left the load generator about k / pps seconds after it said "sending": a loss
/// within 100 ms of the set_peers call is blamed on it, others on the run in general.
fn report_losses(seen: &[bool], sent: f64, got: f64, pps: u64, add_at: f64) {
    let mut near = 0u64;
    let mut lost_seq = 0u64;
    for (k, ok) in seen.iter().enumerate().take(sent as usize) {
        if !ok {
            lost_seq += 1;
            if (k as f64 / pps as f64 - add_at).abs() <= 0.1 {
                near += 1;
            }
        }
    }
    result("add_peer_sent", sent, "packets");
    result("total_lost", (sent - got).max(0.0), "packets");
    result("total_lost_by_seq", lost_seq as f64, "packets");
    result("add_peer_lost", near as f64, "packets");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes the allocator has handed out and not taken back (glibc's mallinfo2, all arenas): the
/// heap part of the RSS figures, without the allocator's own overhead and free space.
fn heap_bytes() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks as u64
}

/// A UDP sink on `SINK` in namespace `ns`: counts datagrams and marks each sequence number
/// (the load generator's packet index) it sees, until told to stop (or 10 min).
type SinkJoin = std::thread::JoinHandle<Vec<bool>>;

fn sink(ns: &str, expect: usize) -> anyhow::Result<(Arc<AtomicU64>, Arc<AtomicBool>, SinkJoin)> {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s, ns) = (count.clone(), stop.clone(), ns.to_string());
    let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let join = std::thread::spawn(move || {
        let mut seen = vec![false; expect];
        let sock = sys::enter_netns(&ns).and_then(|()| {
            let u = UdpSocket::bind(SINK).context("binding the sink")?;
            sys::force_buffers(&u)?;
            u.set_read_timeout(Some(Duration::from_millis(100)))?;
            Ok(u)
        });
        let sock = match sock {
            Ok(u) => {
                let _ = tx.send(Ok(()));
                u
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return seen;
            }
        };
        let mut buf = [0u8; 2048];
        let t0 = Instant::now();
        while !s.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(600) {
            if let Ok(n) = sock.recv(&mut buf) {
                c.fetch_add(1, Ordering::Relaxed);
                if n >= 8 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[..8]);
                    let seq = u64::from_be_bytes(b) as usize;
                    if seq < seen.len() {
                        seen[seq] = true;
                    }
                }
            }
        }
        seen
    });
    rx.recv().context("sink thread")??;
    Ok((count, stop, join))
}
