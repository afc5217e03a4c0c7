//! Throwaway PostgreSQL cluster for integration tests: initdb in a temp dir, a free loopback port.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (CI) every server command
//! runs as the `postgres` system user through `runuser`. The cluster listens on 127.0.0.1 only,
//! with its unix socket inside the temp dir. One cluster serves the whole test binary: the first
//! [`database()`] starts it, each test gets a database of its own (dropped with its
//! [`PgDatabase`]), and the process stops the cluster and removes its directory when it exits.
//! A test that needs a cluster of its own (to stop it, or inside a network namespace) starts one
//! with [`PgCluster::start`].
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A running cluster; stopped and deleted on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

/// One fresh database in the binary's shared cluster, dropped (connections cut) with this value.
pub struct PgDatabase {
    pub url: String,
    pub name: String,
    cluster: &'static PgCluster,
}

impl PgDatabase {
    pub fn cluster(&self) -> &PgCluster {
        self.cluster
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Only the disk matters here: a cluster serving a whole binary would otherwise hold
        // every test's database until the end.
        let _ = self.cluster.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database in the binary's cluster (started by the first call). Call it from
/// the test process's own network namespace: a cluster started inside a test's namespace would
/// be out of reach of the other tests (use [`PgCluster::start`] there).
pub fn database() -> PgDatabase {
    assert!(
        in_process_netns(),
        "postgres::database() from inside a network namespace: start a PgCluster of the test's own"
    );
    let cluster = SHARED.get_or_init(|| {
        let c = PgCluster::start();
        // SAFETY: registers a plain `extern "C" fn()` once; it runs at the process's exit.
        unsafe { libc::atexit(stop_shared_cluster) };
        c
    });
    let name = format!(
        "sesame_test_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    cluster.create_database(&name);
    PgDatabase {
        url: cluster.url(&name),
        name,
        cluster,
    }
}

/// At exit: the shared cluster stops and its directory goes (a static is never dropped).
extern "C" fn stop_shared_cluster() {
    if let Some(c) = SHARED.get() {
        c.stop_and_remove();
    }
}

/// Whether the calling thread is in the process's network namespace (not one a test entered).
fn in_process_netns() -> bool {
    let ns = |path: &str| std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    match (ns("/proc/thread-self/ns/net"), ns("/proc/self/ns/net")) {
        (Ok(thread), Ok(process)) => thread == process,
        _ => true,
    }
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (apt install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/pg_ctl found")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

impl PgCluster {
    /// initdb + pg_ctl start on a free port (retried if another process took the port).
    pub fn start() -> PgCluster {
        let cluster = PgCluster::unstarted();
        let data = cluster.data_dir();
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", show(&out));
        cluster.started()
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`: it replays the primary's WAL and
    /// answers read-only queries) on a free port of its own. initdb's `pg_hba.conf` already
    /// trusts replication from 127.0.0.1, and `wal_level` is `replica` by default.
    pub fn start_standby_of(primary: &PgCluster) -> PgCluster {
        let cluster = PgCluster::unstarted();
        let data = cluster.data_dir();
        let port = primary.port.to_string();
        let out = cluster.run(
            "pg_basebackup",
            &[
                "-D",
                path_str(&data),
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "pg_basebackup failed: {}", show(&out));
        cluster.started()
    }

    /// Waits (30 s at most) until `standby` has replayed every WAL record this primary wrote so
    /// far. The test clusters commit asynchronously, and a crashed primary takes with it what
    /// it had not sent: a standby promoted before it caught up would lack the last commits (even
    /// the schema's last migrations).
    pub fn wait_replayed_by(&self, standby: &PgCluster) {
        let out = self.psql("postgres", "SELECT pg_current_wal_lsn()");
        assert!(out.status.success(), "pg_current_wal_lsn: {}", show(&out));
        let lsn = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let query = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out = standby.psql("postgres", &query);
            if String::from_utf8_lossy(&out.stdout).trim() == "t" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the standby did not replay up to {lsn} in 30 s: {}",
                show(&out)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// `pg_ctl promote`: the standby stops replaying and takes writes.
    pub fn promote(&self) {
        let data = self.data_dir();
        let out = self.run(
            "pg_ctl",
            &["promote", "-w", "-t", "60", "-D", path_str(&data)],
        );
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            show(&out)
        );
    }

    /// A temp dir the server may write (owned by `postgres` when run as root), nothing in it.
    fn unstarted() -> PgCluster {
        let run_as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("sesame-pg-")
            .tempdir()
            .expect("create temp dir for PostgreSQL");
        if run_as_postgres {
            let out = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(out.status.success(), "chown postgres: {out:?}");
        }
        PgCluster {
            dir,
            bin: pg_bin(),
            port: 0,
            run_as_postgres,
        }
    }

    /// `pg_ctl start` of the data dir on a free port (retried if another process took it).
    fn started(mut self) -> PgCluster {
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port();
            match self.pg_ctl_start() {
                Ok(()) => return self,
                Err(e) => last = e,
            }
        }
        panic!("pg_ctl start failed 5 times: {last}");
    }

    /// `pg_ctl start` on this cluster's port: Err(output and server log) if it fails.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=100 -c shared_buffers=16MB \
             -c shared_preload_libraries=pg_stat_statements",
            self.port,
            path_str(self.dir.path())
        );
        let log = self.dir.path().join("postgres.log");
        let data = self.data_dir();
        let out = self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &opts,
            ],
        );
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{}\n{}",
            show(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        ))
    }

    /// Stops the server the hard way (`pg_ctl stop -m immediate`: every server process quits at
    /// once, as in a crash); the port then refuses connections. `start_again()` undoes it.
    pub fn stop(&self) {
        let data = self.data_dir();
        let out = self.run(
            "pg_ctl",
            &["stop", "-w", "-m", "immediate", "-D", path_str(&data)],
        );
        assert!(out.status.success(), "pg_ctl stop failed: {}", show(&out));
    }

    /// Starts the stopped server again on the same port, with the same data (crash recovery).
    pub fn start_again(&self) {
        self.pg_ctl_start()
            .unwrap_or_else(|e| panic!("PostgreSQL did not restart: {e}"));
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` in this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn create_database(&self, name: &str) {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name])
            .output()
            .expect("run createdb");
        assert!(out.status.success(), "createdb {name}: {}", show(&out));
    }

    /// Runs SQL through psql (as a superuser, outside the store), returning its output.
    pub fn psql(&self, db: &str, sql: &str) -> Output {
        let port = self.port.to_string();
        Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }
}

impl PgCluster {
    /// `pg_ctl stop -m immediate` and the directory removed, for the shared cluster (never
    /// dropped); a cluster of a test's own does the same on Drop.
    fn stop_and_remove(&self) {
        self.stop_quietly();
        let _ = std::fs::remove_dir_all(self.dir.path());
    }

    fn stop_quietly(&self) {
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &["stop", "-w", "-m", "immediate", "-D", path_str(&data)],
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_quietly();
        // The TempDir field then removes the directory (root may delete postgres' files).
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn show(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
