//! The `sesame portal` process under test: its configuration (two sites, three granted
//! resources, a directory on a closed loopback port), its start and readiness, and its end
//! (killed on drop, and by the kernel if the benchmark itself dies).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sesame_bench::fill::{INTRANET, PAIE, RH, VPN_USERS};

/// The IT staff group (`[roles] it_staff`).
pub const IT_STAFF: &str = "cn=dsi,ou=groups,dc=ac";
/// The auditors' group (`[roles] auditors`).
pub const AUDITORS: &str = "cn=auditeurs,ou=groups,dc=ac";
/// The site whose feed is read.
pub const SITE: &str = "rectorat";

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes `dir/sesame.toml` for `db_url`, listening on a free loopback port; returns its path
/// and the portal's base URL. The directory is a loopback port nobody listens on: the sync
/// fails (fail-static) and sessions keep the groups stored by the fill.
pub fn write_config(dir: &Path, db_url: &str) -> anyhow::Result<(PathBuf, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let closed = free_port()?;
    let d = dir.display();
    let password = dir.join("ldap.password");
    std::fs::write(&password, "unused\n")?;
    std::fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let key = |b: u8| {
        sesame::key::PrivateKey::from_bytes([b; 32])
            .public_key()
            .to_base64()
    };
    let (k1, k2) = (key(9), key(10));
    let text = format!(
        r#"[portal]
listen = "{addr}"
public_url = "http://{addr}"
secret_key_file = "{d}/portal-secret.key"

[gateway]
endpoint = "198.18.0.1:51820"
tunnel_network = "100.64.0.0/14"
private_key_file = "{d}/gateway.key"
dns = ["198.18.0.53"]

[database]
url = "{db_url}"

[directory]
kind = "openldap"
url = "ldap://127.0.0.1:{closed}"
bind_dn = "cn=sesame,ou=services,dc=ac"
bind_password_file = "{d}/ldap.password"
user_base = "ou=people,dc=ac"
user_filter = "(uid={{username}})"
group_base = "ou=groups,dc=ac"
sync_interval = "60s"
timeout = "2s"

[roles]
vpn_users = ["{VPN_USERS}"]
it_staff = ["{IT_STAFF}"]
auditors = ["{AUDITORS}"]

[audit]
signing_key_file = "{d}/audit.key"
checkpoint_file = "{d}/audit-checkpoints.jsonl"

[log]
level = "info"

[metrics]
listen = "127.0.0.1:0"

[[site]]
name = "{SITE}"
endpoint = "198.18.0.1:51820"
public_key = "{k1}"

[[site]]
name = "dsden56"
endpoint = "198.18.0.2:51820"
public_key = "{k2}"

[[resource]]
name = "paie"
site = "{SITE}"
allow = ["198.18.10.10/32 tcp:443"]

[[resource]]
name = "rh"
site = "{SITE}"
allow = ["198.18.20.0/24 tcp:443"]

[[resource]]
name = "intranet"
site = "dsden56"
allow = ["198.18.30.0/24 tcp:443"]

[[grant]]
group = "{PAIE}"
resources = ["paie"]

[[grant]]
group = "{RH}"
resources = ["rh"]

[[grant]]
group = "{INTRANET}"
resources = ["intranet"]
"#
    );
    let path = dir.join("sesame.toml");
    std::fs::write(&path, text)?;
    Ok((path, format!("http://{addr}")))
}

/// `sesame site token --site rectorat`: the token a site gateway would hold.
pub fn site_token(sesame: &Path, config: &Path) -> anyhow::Result<String> {
    let out = Command::new(sesame)
        .args(["site", "token", "--config"])
        .arg(config)
        .args(["--site", SITE])
        .output()
        .context("running sesame site token")?;
    anyhow::ensure!(
        out.status.success(),
        "sesame site token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A running `sesame portal`; killed (SIGKILL) and reaped on drop.
pub struct PortalProcess {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl PortalProcess {
    /// Starts `sesame portal --config CONFIG`, its log in `CONFIG.log`. Call it from a thread
    /// that lives as long as the benchmark (the main thread): the portal gets SIGKILL when the
    /// thread that started it ends, so a benchmark killed or crashed leaves no portal behind.
    pub fn start(sesame: &Path, config: &Path, base: &str) -> anyhow::Result<PortalProcess> {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(sesame);
        cmd.args(["portal", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out);
        // SAFETY: prctl only, between fork and exec (async-signal-safe).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting sesame portal")?;
        Ok(PortalProcess {
            child,
            base: base.to_string(),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/readyz` to answer 200 (at most `limit`); returns how long it took.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the portal exited ({status}); its log:\n{}", self.log());
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == 200 {
                    return Ok(started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "the portal was not ready within {limit:?}; its log:\n{}",
            self.log()
        )
    }
}

impl Drop for PortalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL server listening on `port` (its postmaster), found by its command line.
pub fn postmaster_of(port: u16) -> Option<u32> {
    let wanted = format!("port={port}");
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("postgres") && cmd.split('\0').any(|a| a.ends_with(&wanted))).then_some(pid)
    })
}

/// CPU time of a whole PostgreSQL server: the postmaster, its live children (backends,
/// checkpointer, walwriter…) and the children it already reaped (cutime + cstime).
pub fn server_cpu(postmaster: u32) -> anyhow::Result<Duration> {
    let hz = sesame_bench::sys::clock_ticks();
    let fields = |pid: u32| -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        Some(
            rest.split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect(),
        )
    };
    // Fields after the command: state is 3, ppid 4, utime..cstime 14..17.
    let f = |v: &[u64], i: usize| v.get(i - 3).copied().unwrap_or(0);
    let main = fields(postmaster).context("the PostgreSQL server is gone")?;
    let mut ticks = f(&main, 14) + f(&main, 15) + f(&main, 16) + f(&main, 17);
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(v) = fields(pid) {
            if f(&v, 4) == u64::from(postmaster) {
                ticks += f(&v, 14) + f(&v, 15);
            }
        }
    }
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}
