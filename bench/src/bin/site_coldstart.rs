//! Cold start of a site gateway fed N devices (issue 18): the real `sesame gateway --site`
//! binary, with no cache, against an in-process portal (SQLite store, the feed route over HTTP
//! on loopback, as `feed_fanout`). Measures the time from the gateway's process start to its
//! peer table holding all N peers (`sesame_gateway_peers`, read from its own metrics endpoint
//! every few ms), and its RSS per device: RSS served N devices minus RSS of the same gateway fed
//! an empty site, over N. With `--serve`, the same for `sesame serve`'s own gateway loading the
//! same N devices from the same store (baseline: `sesame serve` on an empty database).
//!
//! Runs as root in a network namespace of its own (created here, gone with the process): the
//! TUNs, the UDP ports and the portal's loopback live there only.
//! `site_coldstart [--devices N] [--serve] [--sesame PATH] [--timeout SECS] [--enrol-tasks K]`
//! Prints `RESULT coldstart_… value unit` lines.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sesame::config::{Config, LiveConfig};
use sesame::key::PublicKey;
use sesame::service::{sites, Actor};
use sesame::store::{AddressPool, Store};
use sesame_bench::args::Args;
use sesame_bench::devices;
use sesame_bench::sys;
use sesame_bench::tunn::result;

/// The site fed the N devices, and a site with none (the memory baseline).
const SITE: &str = "rectorat";
const EMPTY: &str = "vide";
const VPN: &str = "cn=personnels,ou=groups,dc=academie,dc=test";
/// How often the gateway's metrics are read while it starts.
const POLL: Duration = Duration::from_millis(20);
/// After serving, before RSS is read (the feed's answer buffers freed, the cache written).
const SETTLE: Duration = Duration::from_millis(1500);

fn group(site: &str) -> String {
    format!("cn={site},ou=groups,dc=academie,dc=test")
}

fn main() -> anyhow::Result<()> {
    let args = Args::from_env()?;
    let opts = Opts {
        n: args.get("devices", 10_000)?,
        serve: args.flag("serve"),
        timeout: Duration::from_secs(args.get("timeout", 120)?),
        enrol_tasks: args.get("enrol-tasks", 32)?,
        sesame: match args.str("sesame") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()?.with_file_name("sesame"),
        },
    };
    if !opts.sesame.is_file() {
        bail!(
            "{}: no sesame binary (build it, or pass --sesame PATH)",
            opts.sesame.display()
        );
    }
    own_netns()?;
    // Threads start after the unshare: every one of them (and every child) is in the namespace.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(opts))
}

struct Opts {
    n: u32,
    serve: bool,
    timeout: Duration,
    enrol_tasks: u32,
    sesame: PathBuf,
}

/// Moves this process into a new network namespace with its loopback up.
fn own_netns() -> anyhow::Result<()> {
    // SAFETY: a plain syscall, made before any other thread exists.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!(
            "unshare(CLONE_NEWNET): {} (run as root)",
            std::io::Error::last_os_error()
        );
    }
    sys::ip(&["link", "set", "lo", "up"])
}

async fn run(o: Opts) -> anyhow::Result<()> {
    // On tmpfs when there is one: the store's fsyncs are the enrolment's cost, not the bench's.
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("sesame-coldstart.")
        .tempdir_in(base)?;
    let d = dir.path();
    let id = std::process::id() % 100_000;
    let site_dir = state_dir(d, "site")?;
    let empty_dir = state_dir(d, "empty")?;
    let site_pub = keygen(&site_dir)?;
    let empty_pub = keygen(&empty_dir)?;

    let url = format!("sqlite://{}/sesame.db", d.display());
    let path = d.join("portal.toml");
    let text = portal_config(&url, &site_pub, &empty_pub);
    std::fs::write(&path, &text)?;
    let live = LiveConfig::new(Config::parse(&path, &text)?);
    let store = Store::connect(&url).await?;
    let t = Instant::now();
    enrol_all(&store, o.n, o.enrol_tasks).await?;
    let enrol_s = t.elapsed().as_secs_f64();
    eprintln!("site_coldstart: enrolled {} devices in {enrol_s:.1} s", o.n);
    result("coldstart_enrol", enrol_s, "s");

    // The portal: its first pass computes the sites' sets before any gateway asks.
    let started = sesame_bench::portal::start(&store, &live).await?;
    result(
        "coldstart_portal_first_pass",
        started.first_pass.as_secs_f64() * 1e3,
        "ms",
    );
    let (svc, portal) = (started.services, started.base);
    let admin = Actor::cli("cli:bench".into());
    for (site, state) in [(SITE, &site_dir), (EMPTY, &empty_dir)] {
        let token = sites::create_token(&svc, &admin, site).await?;
        write_secret(&state.join("site.token"), &token)?;
    }

    // The site gateway, fed the empty site, then the N devices (each with no cache).
    let empty = Gateway {
        label: "site gateway (empty site)",
        config: site_gateway_config(&empty_dir, EMPTY, &portal, &format!("sce{id}"), 1)?,
        metrics: "127.0.0.1:9201".parse()?,
        expect: 0,
        site: true,
    };
    let full = Gateway {
        label: "site gateway",
        config: site_gateway_config(&site_dir, SITE, &portal, &format!("scs{id}"), 2)?,
        metrics: "127.0.0.1:9202".parse()?,
        expect: u64::from(o.n),
        site: true,
    };
    let e = empty.measure(&o).await?;
    let f = full.measure(&o).await?;
    report("site", o.n, &e, &f);
    if o.serve {
        serve_side_by_side(&o, d, &url, id).await?;
    }
    drop(store);
    Ok(())
}

/// `sesame serve` on an empty database, then on the store the site gateway was fed from.
async fn serve_side_by_side(o: &Opts, d: &Path, url: &str, id: u32) -> anyhow::Result<()> {
    let empty_db = format!("sqlite://{}/empty.db", d.display());
    let empty = Gateway {
        label: "sesame serve (empty database)",
        config: serve_config(&state_dir(d, "serve-empty")?, &empty_db, id, 1)?,
        metrics: "127.0.0.1:9203".parse()?,
        expect: 0,
        site: false,
    };
    let full = Gateway {
        label: "sesame serve",
        config: serve_config(&state_dir(d, "serve")?, url, id, 2)?,
        metrics: "127.0.0.1:9204".parse()?,
        expect: u64::from(o.n),
        site: false,
    };
    let e = empty.measure(o).await?;
    let f = full.measure(o).await?;
    report("serve", o.n, &e, &f);
    Ok(())
}

fn report(what: &str, n: u32, empty: &Started, full: &Started) {
    result(
        &format!("coldstart_{what}_devices"),
        f64::from(n),
        "devices",
    );
    result(&format!("coldstart_{what}_up"), full.up_s * 1e3, "ms");
    result(
        &format!("coldstart_{what}_served"),
        full.served_s * 1e3,
        "ms",
    );
    result(&format!("coldstart_{what}_cpu"), full.cpu_s * 1e3, "ms");
    result(
        &format!("coldstart_{what}_empty_served"),
        empty.served_s * 1e3,
        "ms",
    );
    result(
        &format!("coldstart_{what}_rss"),
        full.rss_kib as f64 / 1024.0,
        "MiB",
    );
    result(
        &format!("coldstart_{what}_empty_rss"),
        empty.rss_kib as f64 / 1024.0,
        "MiB",
    );
    let per = full.rss_kib.saturating_sub(empty.rss_kib) as f64 / f64::from(n.max(1));
    result(&format!("coldstart_{what}_kib_per_device"), per, "KiB");
    if let Some(w) = full.wg_peers {
        result(&format!("coldstart_{what}_wg_peers"), w as f64, "peers");
    }
}

/// One gateway process to start cold and watch.
struct Gateway {
    label: &'static str,
    config: PathBuf,
    metrics: SocketAddr,
    expect: u64,
    /// `sesame gateway --site` (else `sesame serve`).
    site: bool,
}

/// What one cold start showed.
struct Started {
    /// From the spawn to the metrics endpoint answering.
    up_s: f64,
    /// From the spawn to the peer table holding every expected peer (after a feed answer).
    served_s: f64,
    /// The process's CPU time (user + system, all threads) when it was found serving.
    cpu_s: f64,
    rss_kib: u64,
    /// `wg show IFACE peers`, counted once served (`None`: wg not installed).
    wg_peers: Option<u64>,
}

impl Gateway {
    async fn measure(&self, o: &Opts) -> anyhow::Result<Started> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let log = self.config.with_extension("log");
        let mut cmd = tokio::process::Command::new(&o.sesame);
        cmd.arg(if self.site { "gateway" } else { "serve" })
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("err"))?)
            .kill_on_drop(true);
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.label))?;
        let pid = child.id().context("child pid")?;
        let mut up = None;
        let served = loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}) before serving; its log:\n{}",
                    self.label,
                    tail(&log)
                );
            }
            if t0.elapsed() > o.timeout {
                terminate(&mut child, pid).await;
                bail!(
                    "{}: not serving {} peers after {:?}; its log:\n{}",
                    self.label,
                    self.expect,
                    o.timeout,
                    tail(&log)
                );
            }
            if let Some(m) = scrape(&http, self.metrics).await {
                up.get_or_insert(t0.elapsed());
                // A site gateway has served once a feed answer came (lag ≥ 0); `sesame serve`
                // answers its metrics only after its first publication.
                if m.peers == Some(self.expect) && (!self.site || m.fed) {
                    break t0.elapsed();
                }
            }
            tokio::time::sleep(POLL).await;
        };
        let cpu_s = sys::process_cpu(pid).map_or(0.0, |c| c.as_secs_f64());
        tokio::time::sleep(SETTLE).await;
        let rss_kib = rss_of(pid);
        let wg_peers = wg_peers(&self.config).await;
        terminate(&mut child, pid).await;
        eprintln!(
            "site_coldstart: {}: up {:.0} ms, {} peers served {:.0} ms after start, RSS {:.1} MiB",
            self.label,
            up.unwrap_or(served).as_secs_f64() * 1e3,
            self.expect,
            served.as_secs_f64() * 1e3,
            rss_kib as f64 / 1024.0
        );
        Ok(Started {
            up_s: up.unwrap_or(served).as_secs_f64(),
            served_s: served.as_secs_f64(),
            cpu_s,
            rss_kib,
            wg_peers,
        })
    }
}

/// The gateway's peer count (`sesame_gateway_peers`) and whether a feed answer came.
struct Scraped {
    peers: Option<u64>,
    fed: bool,
}

async fn scrape(http: &reqwest::Client, at: SocketAddr) -> Option<Scraped> {
    let text = http
        .get(format!("http://{at}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut s = Scraped {
        peers: None,
        fed: false,
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let base = name.split('{').next().unwrap_or(name);
        match base {
            "sesame_gateway_peers" => s.peers = value.parse::<f64>().ok().map(|v| v as u64),
            "sesame_site_feed_lag_seconds" => {
                s.fed = value.parse::<f64>().is_ok_and(|v| v >= 0.0);
            }
            _ => {}
        }
    }
    Some(s)
}

/// Ends the gateway with SIGTERM (it removes its TUN and UAPI socket), SIGKILL after 10 s.
async fn terminate(child: &mut tokio::process::Child, pid: u32) {
    // SAFETY: a plain syscall on our own child's pid (not yet reaped).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `wg show IFACE peers` through the gateway's UAPI socket (the stock tool), line count.
async fn wg_peers(config: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(config).ok()?;
    let iface = text
        .lines()
        .find_map(|l| l.strip_prefix("interface = "))?
        .trim_matches('"')
        .to_string();
    let out = tokio::process::Command::new("wg")
        .args(["show", &iface, "peers"])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).lines().count() as u64)
}

fn tail(log: &Path) -> String {
    let mut text = String::new();
    for f in [log.to_path_buf(), log.with_extension("err")] {
        let t = std::fs::read_to_string(&f).unwrap_or_default();
        let start = t.len().saturating_sub(3000);
        text.push_str(t.get(start..).unwrap_or(&t));
    }
    text
}

/// A gateway host's state folder (key, token, cache, spool), 0700.
fn state_dir(d: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = d.join(name);
    std::fs::DirBuilder::new().mode(0o700).create(&p)?;
    Ok(p)
}

fn keygen(dir: &Path) -> anyhow::Result<PublicKey> {
    Ok(sesame::gateway::keys::write_new_key(
        &dir.join("gateway.key"),
    )?)
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// The portal's configuration: the two sites, a resource on each, the grants by group.
fn portal_config(url: &str, site_pub: &PublicKey, empty_pub: &PublicKey) -> String {
    let mut t = format!(
        "[database]\nurl = \"{url}\"\n[gateway]\ntunnel_network = \"100.64.0.0/16\"\n\
         [roles]\nvpn_users = [\"{VPN}\"]\n"
    );
    for (i, (s, key)) in [(SITE, site_pub), (EMPTY, empty_pub)].iter().enumerate() {
        t.push_str(&format!(
            "[[site]]\nname = \"{s}\"\nendpoint = \"vpn-{s}.example.org:51820\"\npublic_key = \"{key}\"\n\
             [[resource]]\nname = \"app-{s}\"\nsite = \"{s}\"\nallow = [\"198.18.{i}.0/24 tcp:443\", \"198.18.{i}.0/24 icmp\"]\n\
             [[grant]]\ngroup = \"{}\"\nresources = [\"app-{s}\"]\n",
            group(s)
        ));
    }
    t
}

/// `sesame gateway --site`'s configuration (no database, no directory, no audit key).
fn site_gateway_config(
    dir: &Path,
    site: &str,
    portal: &str,
    iface: &str,
    port: u16,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:5182{port}\"\nendpoint = \"127.0.0.1:5182{port}\"\n\
             interface = \"{iface}\"\ntunnel_network = \"100.64.0.0/16\"\n\
             private_key_file = \"{key}\"\nsite = \"{site}\"\nportals = [\"{portal}\"]\n\
             portal_token_file = \"{token}\"\n[metrics]\nlisten = \"127.0.0.1:920{port}\"\n",
            key = dir.join("gateway.key").display(),
            token = dir.join("site.token").display(),
        ),
    )?;
    Ok(path)
}

/// `sesame serve`'s configuration for the same devices: the resource is its own gateway's
/// (no site); the directory is a closed port (its sync fails and changes nothing).
fn serve_config(dir: &Path, url: &str, id: u32, n: u16) -> anyhow::Result<PathBuf> {
    let key = dir.join("gateway.key");
    sesame::gateway::keys::write_new_key(&key)?;
    let password = dir.join("ldap.password");
    write_secret(&password, "unused")?;
    let path = dir.join("sesame.toml");
    let iface = format!("scv{n}{id}");
    std::fs::write(
        &path,
        format!(
            "[portal]\nlisten = \"127.0.0.1:808{n}\"\npublic_url = \"http://127.0.0.1:808{n}\"\n\
             [gateway]\nlisten = \"127.0.0.1:5183{n}\"\nendpoint = \"127.0.0.1:5183{n}\"\n\
             interface = \"{iface}\"\ntunnel_network = \"100.64.0.0/16\"\nprivate_key_file = \"{key}\"\n\
             [database]\nurl = \"{url}\"\n\
             [directory]\nkind = \"openldap\"\nurl = \"ldap://127.0.0.1:1\"\n\
             bind_dn = \"cn=sesame,ou=services,dc=academie,dc=test\"\nbind_password_file = \"{pw}\"\n\
             user_base = \"ou=people,dc=academie,dc=test\"\nuser_filter = \"(uid={{username}})\"\n\
             group_base = \"ou=groups,dc=academie,dc=test\"\nsync_interval = \"3600s\"\ntimeout = \"2s\"\n\
             [roles]\nvpn_users = [\"{VPN}\"]\n\
             [metrics]\nlisten = \"127.0.0.1:920{m}\"\n\
             [[resource]]\nname = \"app-{SITE}\"\nallow = [\"198.18.0.0/24 tcp:443\", \"198.18.0.0/24 icmp\"]\n\
             [[grant]]\ngroup = \"{g}\"\nresources = [\"app-{SITE}\"]\n",
            key = key.display(),
            pw = password.display(),
            m = n + 2,
            g = group(SITE),
        ),
    )?;
    Ok(path)
}

/// Device `i`'s key (the feed_fanout scheme).
/// N devices on the site, one user each, enrolled through the store (code, then enrolment:
/// concurrent enrolments are group-committed), `tasks` at a time.
async fn enrol_all(store: &Store, n: u32, tasks: u32) -> anyhow::Result<()> {
    let pool = AddressPool {
        network: "100.64.0.0/16".parse()?,
        reserved: vec!["100.64.0.1".parse()?],
    };
    let next = Arc::new(AtomicU32::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks.max(1) {
        let (store, pool, next) = (store.clone(), pool.clone(), Arc::clone(&next));
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                enrol_one(&store, &pool, i).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

async fn enrol_one(store: &Store, pool: &AddressPool, i: u32) -> anyhow::Result<()> {
    devices::enrol(store, pool, i, vec![VPN.to_string(), group(SITE)]).await?;
    Ok(())
}
