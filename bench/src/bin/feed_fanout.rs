//! Fan-out of a revocation to the site gateways' feeds: an in-process portal (no gateway) over a
//! SQLite store with N enrolled devices on 3 sites, one long-poll client per site (HTTP on
//! loopback, as a site gateway's feed client), then R revocations one after another through the
//! service (as `DELETE /api/v1/devices/{id}` does). Measures, per site that had the device, the
//! time from the revocation call to the client receiving the key in `removed`.
//! Prints `RESULT feed_fanout_p50_ms …` and `RESULT feed_fanout_p99_ms …`.
//! `feed_fanout [DEVICES] [REVOCATIONS]` (default 10000 50).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sesame::config::{Config, LiveConfig};
use sesame::key::PublicKey;
use sesame::service::{devices, sites, Actor};
use sesame::store::{AddressPool, Store};
use sesame_bench::devices::{self as bench_devices, device_key};
use sesame_bench::tunn::result;
use tokio::sync::mpsc;

const SITES: [&str; 3] = ["rectorat", "dsden56", "dsden29"];
const VPN: &str = "cn=personnels,ou=groups,dc=academie,dc=test";

fn config_text(url: &str) -> String {
    let mut t = format!("[database]\nurl = \"{url}\"\n[gateway]\ntunnel_network = \"100.64.0.0/16\"\n[roles]\nvpn_users = [\"{VPN}\"]\n");
    for (i, s) in SITES.iter().enumerate() {
        let key = PublicKey::from_bytes([200 + i as u8; 32]).expect("key");
        t.push_str(&format!(
            "[[site]]\nname = \"{s}\"\nendpoint = \"vpn-{s}.example.org:51820\"\npublic_key = \"{key}\"\n\
             [[resource]]\nname = \"app-{s}\"\nsite = \"{s}\"\nallow = [\"198.18.{i}.0/24 tcp:443\"]\n\
             [[grant]]\ngroup = \"cn={s},ou=groups,dc=academie,dc=test\"\nresources = [\"app-{s}\"]\n"
        ));
    }
    t
}

/// Device `i`'s key, and its sites: `i % 3`, and the next one for every other device.
fn device_sites(i: u32) -> Vec<usize> {
    let first = (i % 3) as usize;
    if i.is_multiple_of(2) {
        vec![first, (first + 1) % 3]
    } else {
        vec![first]
    }
}

async fn enrol_all(store: &Store, n: u32) -> anyhow::Result<Vec<i64>> {
    let pool = AddressPool {
        network: "100.64.0.0/16".parse()?,
        reserved: vec!["100.64.0.1".parse()?],
    };
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut groups = vec![VPN.to_string()];
        groups.extend(
            device_sites(i)
                .into_iter()
                .map(|s| format!("cn={},ou=groups,dc=academie,dc=test", SITES[s])),
        );
        ids.push(bench_devices::enrol(store, &pool, i, groups).await?);
    }
    Ok(ids)
}

/// One site's feed client: long-polls and reports each removed key with the instant it arrived.
async fn follow(
    base: String,
    token: String,
    site: usize,
    tx: mpsc::UnboundedSender<(usize, String, Instant)>,
) {
    let client = reqwest::Client::new();
    let (mut since, mut generation) = (None::<u64>, String::new());
    loop {
        let mut url = format!("{base}/api/v1/gateway/feed?wait=25");
        if let Some(v) = since {
            url.push_str(&format!("&since={v}&generation={generation}"));
        }
        let Ok(r) = client.get(&url).bearer_auth(&token).send().await else {
            return;
        };
        let Ok(bytes) = r.bytes().await else { return };
        let now = Instant::now();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return;
        };
        for k in v["removed"].as_array().into_iter().flatten() {
            let _ = tx.send((site, k.as_str().unwrap_or_default().to_string(), now));
        }
        since = v["version"].as_u64();
        generation = v["generation"].as_str().unwrap_or_default().to_string();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let revocations: u32 = args.next().map_or(Ok(50), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/sesame.db", dir.path().display());
    let path = dir.path().join("sesame.toml");
    let text = config_text(&url);
    std::fs::write(&path, &text)?;
    let live = LiveConfig::new(Config::parse(&path, &text)?);
    let store = Store::connect(&url).await?;
    let started = Instant::now();
    let ids = enrol_all(&store, n).await?;
    eprintln!(
        "enrolled {n} devices in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = sesame_bench::portal::start(&store, &live).await?;
    eprintln!(
        "first pass (3 site sets from {n} devices): {:.0} ms",
        started.first_pass.as_secs_f64() * 1e3
    );
    let (svc, base) = (started.services, started.base);
    let admin = Actor::cli("cli:bench".into());
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (i, s) in SITES.iter().enumerate() {
        let token = sites::create_token(&svc, &admin, s).await?;
        tokio::spawn(follow(base.clone(), token, i, tx.clone()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // every client holds its long-poll
    let mut lags = Vec::new();
    for r in 0..revocations {
        let i = (r * 7919) % n;
        let key = device_key(i).to_base64();
        let expected = device_sites(i);
        let at = Instant::now();
        devices::revoke(&svc, &admin, ids[i as usize], "bench", None).await?;
        let mut seen: HashMap<usize, Instant> = HashMap::new();
        while seen.len() < expected.len() {
            let (site, k, when) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .context("a site never saw the removal")?
                .context("clients gone")?;
            if k == key {
                seen.insert(site, when);
            }
        }
        for when in seen.values() {
            lags.push(when.duration_since(at).as_secs_f64() * 1e3);
        }
    }
    lags.sort_by(f64::total_cmp);
    result("feed_fanout_devices", f64::from(n), "devices");
    result("feed_fanout_samples", lags.len() as f64, "removals");
    result("feed_fanout_p50", percentile(&lags, 0.50), "ms");
    result("feed_fanout_p99", percentile(&lags, 0.99), "ms");
    result(
        "feed_fanout_max",
        lags.last().copied().unwrap_or_default(),
        "ms",
    );
    Ok(())
}
