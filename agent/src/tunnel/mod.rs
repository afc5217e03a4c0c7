//! `up` / `down` and the background daemon (Linux): TUN, routes to the granted networks only, refresh.

mod engine;
pub mod peers;
mod refresh;
pub mod route;
mod tun;

use std::net::IpAddr;

use ipnet::IpNet;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::enrol::load_conf;
use crate::error::AgentError;
use crate::i18n::Lang;
use crate::state::{AgentState, Paths};
use crate::status::{now_unix, TunnelStatus};

/// Set by SIGTERM/SIGINT: leave the loop, remove routes and interface.
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);
/// Set by SIGHUP: reload the private key (after `rotate`).
pub(crate) static RELOAD: AtomicBool = AtomicBool::new(false);

/// Default MTU of the tunnel interface (WireGuard's usual 1420).
pub const DEFAULT_MTU: u16 = 1420;
/// How long `up` waits for the daemon to bring the interface up.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `up` then waits for the first handshake before saying "not yet".
const HANDSHAKE_WAIT: Duration = Duration::from_secs(6);

/// State shared by the packet loop and the refresh thread.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// The site gateways wanted (the main one first), each with its networks: what the
    /// engine runs, published by the refresh when the grants change.
    pub peers: Vec<peers::PeerSpec>,
    /// Bumped with each change of `peers`: the engine compares it once per loop.
    pub generation: u64,
    /// Routes installed (the union of the peers' networks).
    pub routes: Vec<IpNet>,
    pub revoked: bool,
    pub last_refresh_at: Option<u64>,
    pub refresh_error: Option<String>,
}

/// Options of `up` and of the daemon.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub interface: Option<String>,
    pub refresh_secs: Option<u64>,
    pub lang: Lang,
}

/// Result of `up`.
pub struct UpOutcome {
    pub interface: String,
    pub connected: bool,
}

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}
extern "C" fn on_reload(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// The pid of a running daemon for this directory, if any.
pub fn running_pid(paths: &Paths) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(paths.pid())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("__daemon"));
    (alive && ours).then_some(pid)
}

/// Starts the daemon and returns once the interface is up (or the start failed).
pub fn up(paths: &Paths, options: &UpOptions) -> Result<UpOutcome, AgentError> {
    let agent = AgentState::load(paths)?;
    load_conf(&paths.conf())?;
    if let Some(pid) = running_pid(paths) {
        return Err(AgentError::AlreadyRunning(pid));
    }
    let interface = options.interface.clone().unwrap_or(agent.interface.clone());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log())?;
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg("__daemon")
        .arg("--dir")
        .arg(&paths.dir)
        .arg("--interface")
        .arg(&interface);
    if let Some(secs) = options.refresh_secs {
        command.arg("--refresh").arg(secs.to_string());
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the terminal's session.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let _ = std::fs::remove_file(paths.status());
    let mut child = command.spawn()?;
    let pid = child.id() as i32;
    let log_path = paths.log().display().to_string();
    let started = Instant::now();
    loop {
        if let Some(status) = TunnelStatus::load(paths).filter(|s| s.pid == pid) {
            match status.state.as_str() {
                "up" => break,
                "failed" => {
                    let _ = child.wait();
                    return Err(AgentError::Tunnel {
                        detail: status.error.unwrap_or_default(),
                        log: log_path,
                    });
                }
                _ => {}
            }
        }
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(AgentError::Tunnel {
                detail: format!("daemon exited ({exit})"),
                log: log_path,
            });
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(AgentError::Tunnel {
                detail: "timeout".into(),
                log: log_path,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = Instant::now();
    let mut connected = false;
    while waited.elapsed() < HANDSHAKE_WAIT {
        if TunnelStatus::load(paths).is_some_and(|s| s.connected()) {
            connected = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(UpOutcome {
        interface,
        connected,
    })
}

/// The hidden `__daemon` subcommand: runs the tunnel in the foreground until SIGTERM.
pub fn run_daemon(
    paths: &Paths,
    interface: &str,
    refresh_secs: Option<u64>,
    lang: Lang,
) -> Result<(), AgentError> {
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_reload as *const () as libc::sighandler_t);
    }
    crate::files::write_private_atomic(&paths.pid(), std::process::id().to_string().as_bytes())?;
    let result = start_and_run(paths, interface, refresh_secs, lang);
    if let Err(err) = &result {
        log(&format!("start failed: {err}"));
        let status = TunnelStatus {
            pid: std::process::id() as i32,
            interface: interface.to_string(),
            state: "failed".into(),
            error: Some(err.to_string()),
            updated_at: now_unix(),
            ..Default::default()
        };
        let _ = status.save(paths);
    }
    let _ = std::fs::remove_file(paths.pid());
    result
}

fn start_and_run(
    paths: &Paths,
    interface: &str,
    refresh_secs: Option<u64>,
    lang: Lang,
) -> Result<(), AgentError> {
    let tunnel_err = |detail: String| AgentError::Tunnel {
        detail,
        log: paths.log().display().to_string(),
    };
    let agent = AgentState::load(paths)?;
    let conf = load_conf(&paths.conf())?;
    let (specs, unresolved) =
        peers::from_conf(&conf, crate::state::load_device_cache(paths).as_ref(), &[])
            .map_err(tunnel_err)?;
    for endpoint in unresolved {
        log(&format!(
            "cannot resolve the site gateway {endpoint}: left out until the next refresh"
        ));
    }
    let mtu = conf.mtu.unwrap_or(DEFAULT_MTU);
    let tun =
        tun::Tun::open(interface, mtu).map_err(|e| tunnel_err(format!("TUN {interface}: {e}")))?;
    route::configure(interface, conf.address, mtu).map_err(|e| tunnel_err(e.to_string()))?;
    let endpoints: Vec<IpAddr> = specs.iter().map(|p| p.addr.ip()).collect();
    let routes = route::routable(&peers::union(&specs), &endpoints);
    for net in &routes {
        route::add(interface, net).map_err(|e| tunnel_err(e.to_string()))?;
    }
    let gateways: Vec<String> = specs
        .iter()
        .map(|p| format!("{} {}", p.site, p.addr).trim().to_string())
        .collect();
    log(&format!(
        "{interface} up, {}, routes {routes:?}, gateways {}, TUN offloads {:?}",
        conf.address,
        gateways.join(", "),
        tun.offloads
    ));
    if !conf.dns.is_empty() {
        log(&format!(
            "DNS {} not applied (not managed on Linux by sesame-agent)",
            conf.dns.join(", ")
        ));
    }
    let shared = Arc::new(Mutex::new(Shared {
        peers: specs.clone(),
        routes,
        ..Default::default()
    }));
    let mut engine = engine::Engine::new(
        tun,
        specs,
        conf.private_key.to_dalek(),
        conf.keepalive,
        shared.clone(),
        paths.clone(),
    )
    .map_err(|e| tunnel_err(format!("UDP socket: {e}")))?;
    let refresher = refresh::spawn(
        paths.clone(),
        agent,
        interface.to_string(),
        refresh_secs,
        shared,
        lang,
    );
    let conf_path = paths.conf();
    engine.run(|| match load_conf(&conf_path) {
        Ok(conf) => {
            log("key reloaded");
            Some(conf.private_key.to_dalek())
        }
        Err(err) => {
            log(&format!("key reload failed: {err}"));
            None
        }
    });
    STOP.store(true, Ordering::SeqCst);
    let _ = refresher.join();
    engine.report("down");
    // Closing the TUN removes the interface and, with it, every route through it.
    drop(engine);
    if route::link_exists(interface) {
        let _ = route::delete_link(interface);
    }
    log(&format!("{interface} down"));
    Ok(())
}

/// Stops the daemon; removes a leftover interface too. Returns false if nothing was running.
pub fn down(paths: &Paths, interface: Option<&str>) -> Result<(String, bool), AgentError> {
    let interface = interface
        .map(str::to_string)
        .or_else(|| {
            TunnelStatus::load(paths)
                .map(|s| s.interface)
                .filter(|i| !i.is_empty())
        })
        .or_else(|| AgentState::load(paths).ok().map(|a| a.interface))
        .unwrap_or_else(|| crate::state::DEFAULT_INTERFACE.to_string());
    let mut stopped = false;
    if let Some(pid) = running_pid(paths) {
        // SAFETY: plain kill(2) on the daemon's pid, checked above to be our daemon.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        while running_pid(paths).is_some() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if running_pid(paths).is_some() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(200));
        }
        stopped = true;
    }
    if route::link_exists(&interface) {
        route::delete_link(&interface).map_err(|e| AgentError::Tunnel {
            detail: e.to_string(),
            log: paths.log().display().to_string(),
        })?;
        stopped = true;
    }
    let _ = std::fs::remove_file(paths.pid());
    Ok((interface, stopped))
}

/// Asks a running daemon to reload its key (after `rotate`). Returns true if one was signalled.
pub fn signal_reload(paths: &Paths) -> bool {
    match running_pid(paths) {
        // SAFETY: kill(2) on our own daemon.
        Some(pid) => unsafe { libc::kill(pid, libc::SIGHUP) == 0 },
        None => false,
    }
}

/// One line in the daemon's log (stderr, redirected to `agent.log`); never called per packet.
pub(crate) fn log(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "[{}] {line}", now_unix());
}
