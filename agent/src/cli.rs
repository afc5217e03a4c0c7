//! Command line of `sesame-agent` and everything it prints (the only place that writes to stdout).
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use sesame::api::{codes, DeviceConfig};

use crate::enrol::{self, EnrolArgs, PasswordSource};
use crate::error::AgentError;
use crate::i18n::{Lang, Localized, Msg};
use crate::portal::Portal;
use crate::state::{self, AgentState, Paths, DEFAULT_DIR};
use crate::status::TunnelStatus;

#[derive(Debug, Parser)]
#[command(
    name = "sesame-agent",
    version,
    about = "Sesame VPN laptop agent / agent VPN Sesame pour ordinateur portable"
)]
pub struct Cli {
    /// Language of messages: fr (default) or en; LANG=en* also selects English.
    #[arg(long, global = true)]
    pub lang: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enrol this laptop with the one-time code from IT (the key is generated here and never leaves it).
    Enrol {
        /// Portal address, e.g. https://vpn.example.org (http:// only for labs, when written explicitly).
        #[arg(long)]
        portal: String,
        /// One-time enrolment code given by IT.
        #[arg(long)]
        code: String,
        /// Your académie username.
        #[arg(long)]
        user: String,
        /// Read the password from the first line of standard input instead of a hidden prompt.
        #[arg(long)]
        password_stdin: bool,
        /// PEM file of the portal's private certificate authority.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Bring the tunnel up in the background (Linux).
    Up {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Interface name (default from agent.toml: sesame0).
        #[arg(long)]
        interface: Option<String>,
        /// Seconds between two grant refreshes from the portal (default from agent.toml: 60).
        #[arg(long)]
        refresh: Option<u64>,
    },
    /// Stop the tunnel: routes and interface removed.
    Down {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        #[arg(long)]
        interface: Option<String>,
    },
    /// Connection state, traffic, reachable resources, key expiry.
    Status {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Replace the laptop's key with a new one generated here.
    Rotate {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// The background tunnel process started by `up`.
    #[command(name = "__daemon", hide = true)]
    Daemon {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        interface: String,
        #[arg(long)]
        refresh: Option<u64>,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let lang = Lang::detect(cli.lang.as_deref());
    let user = match &cli.command {
        Command::Enrol { user, .. } => Some(user.clone()),
        _ => None,
    };
    match run(cli.command, lang) {
        Ok(()) => 0,
        Err(err) => {
            let msg = err.to_msg(user.as_deref());
            eprintln!("{}", Localized(&msg, lang));
            let mut detail = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                detail.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("  ({detail})");
            1
        }
    }
}

fn say(msg: &Msg, lang: Lang) {
    println!("{}", Localized(msg, lang));
}

fn run(command: Command, lang: Lang) -> Result<(), AgentError> {
    match command {
        Command::Enrol {
            portal,
            code,
            user,
            password_stdin,
            ca_file,
            dir,
        } => {
            let password = if password_stdin {
                PasswordSource::Stdin
            } else {
                PasswordSource::Prompt
            };
            let args = EnrolArgs {
                portal: &portal,
                code: &code,
                user: &user,
                password,
                ca_file: ca_file.as_deref(),
                dir: &dir,
                lang,
            };
            #[cfg(target_os = "linux")]
            if let Some(pid) = crate::tunnel::running_pid(&Paths::new(&dir)) {
                return Err(AgentError::AlreadyRunning(pid));
            }
            let done = enrol::enrol(&args)?;
            if done.plain_http {
                eprintln!(
                    "{}",
                    Localized(
                        &Msg::PlainHttpWarning {
                            url: portal.clone()
                        },
                        lang
                    )
                );
            }
            say(
                &Msg::Enrolled {
                    device_id: done.device_id,
                    address: done.address,
                    conf: done.conf.display().to_string(),
                },
                lang,
            );
            Ok(())
        }
        Command::Up {
            dir,
            interface,
            refresh,
        } => up(&Paths::new(dir), interface, refresh, lang),
        Command::Down { dir, interface } => down(&Paths::new(dir), interface.as_deref(), lang),
        Command::Status { dir } => status(&Paths::new(dir), lang),
        Command::Rotate { dir } => {
            let paths = Paths::new(dir);
            let done = enrol::rotate(&paths, lang)?;
            #[cfg(target_os = "linux")]
            crate::tunnel::signal_reload(&paths);
            say(
                &Msg::Rotated {
                    expires_at: done.expires_at,
                },
                lang,
            );
            Ok(())
        }
        Command::Daemon {
            dir,
            interface,
            refresh,
        } => daemon(&Paths::new(dir), &interface, refresh, lang),
    }
}

#[cfg(target_os = "linux")]
fn up(
    paths: &Paths,
    interface: Option<String>,
    refresh: Option<u64>,
    lang: Lang,
) -> Result<(), AgentError> {
    let options = crate::tunnel::UpOptions {
        interface,
        refresh_secs: refresh,
        lang,
    };
    let outcome = crate::tunnel::up(paths, &options)?;
    if outcome.connected {
        say(
            &Msg::TunnelUp {
                iface: outcome.interface,
            },
            lang,
        );
    } else {
        say(
            &Msg::TunnelUpNoHandshake {
                iface: outcome.interface,
            },
            lang,
        );
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn down(paths: &Paths, interface: Option<&str>, lang: Lang) -> Result<(), AgentError> {
    let (iface, stopped) = crate::tunnel::down(paths, interface)?;
    say(
        &if stopped {
            Msg::TunnelDown { iface }
        } else {
            Msg::NotRunning
        },
        lang,
    );
    Ok(())
}

#[cfg(target_os = "linux")]
fn daemon(
    paths: &Paths,
    interface: &str,
    refresh: Option<u64>,
    lang: Lang,
) -> Result<(), AgentError> {
    crate::tunnel::run_daemon(paths, interface, refresh, lang)
}

#[cfg(not(target_os = "linux"))]
fn unsupported(paths: &Paths) -> AgentError {
    AgentError::Unsupported {
        conf: paths.conf().display().to_string(),
    }
}
#[cfg(not(target_os = "linux"))]
fn up(paths: &Paths, _: Option<String>, _: Option<u64>, _: Lang) -> Result<(), AgentError> {
    Err(unsupported(paths))
}
#[cfg(not(target_os = "linux"))]
fn down(paths: &Paths, _: Option<&str>, _: Lang) -> Result<(), AgentError> {
    Err(unsupported(paths))
}
#[cfg(not(target_os = "linux"))]
fn daemon(paths: &Paths, _: &str, _: Option<u64>, _: Lang) -> Result<(), AgentError> {
    Err(unsupported(paths))
}

fn daemon_status(paths: &Paths) -> Option<TunnelStatus> {
    #[cfg(target_os = "linux")]
    {
        crate::tunnel::running_pid(paths)?;
        TunnelStatus::load(paths).filter(|s| s.state == "up")
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = paths;
        None
    }
}

/// What the portal said when `status` asked it.
enum Live {
    Fresh(DeviceConfig),
    Revoked,
    Unreachable,
}

fn ask_portal(agent: &AgentState, lang: Lang) -> Live {
    let portal = match Portal::new(
        &agent.portal,
        agent.ca_file.as_deref(),
        Duration::from_secs(5),
        lang,
    ) {
        Ok(portal) => portal,
        Err(_) => return Live::Unreachable,
    };
    match portal.device_config(&agent.device_token) {
        Ok(device) => Live::Fresh(device),
        Err(err) if err.code() == Some(codes::DEVICE_REVOKED) => Live::Revoked,
        Err(_) => Live::Unreachable,
    }
}

fn status(paths: &Paths, lang: Lang) -> Result<(), AgentError> {
    let agent = AgentState::load(paths)?;
    let tunnel = daemon_status(paths);
    let live = ask_portal(&agent, lang);
    let device = match &live {
        Live::Fresh(device) => {
            let _ = state::save_device_cache(paths, device);
            Some(device.clone())
        }
        _ => state::load_device_cache(paths),
    };
    let revoked = matches!(live, Live::Revoked) || tunnel.as_ref().is_some_and(|t| t.revoked);
    match &tunnel {
        Some(t) if t.connected() && !revoked => say(
            &Msg::StatusConnected {
                iface: t.interface.clone(),
            },
            lang,
        ),
        _ => say(&Msg::StatusNotConnected, lang),
    }
    if let Some(t) = &tunnel {
        match t.last_handshake_age_secs {
            Some(secs) => say(&Msg::StatusHandshake { secs }, lang),
            None => say(&Msg::StatusNoHandshake, lang),
        }
        say(
            &Msg::StatusBytes {
                rx: t.rx_bytes,
                tx: t.tx_bytes,
            },
            lang,
        );
    }
    if let Some(device) = &device {
        print_resources(device, lang);
        say(
            &Msg::StatusExpiry {
                expires_at: device.expires_at.clone(),
            },
            lang,
        );
        if !device.dns.is_empty() && tunnel.is_some() {
            say(
                &Msg::StatusDnsNotApplied {
                    dns: device.dns.join(", "),
                },
                lang,
            );
        }
    }
    if matches!(live, Live::Unreachable) {
        say(
            &Msg::StatusPortalStale {
                url: agent.portal.clone(),
            },
            lang,
        );
    }
    if revoked {
        say(&Msg::DeviceRevoked, lang);
    }
    Ok(())
}

fn print_resources(device: &DeviceConfig, lang: Lang) {
    if device.allowed_ips.is_empty() && device.resources.is_empty() {
        say(&Msg::StatusNoResources, lang);
        return;
    }
    say(&Msg::StatusResources, lang);
    if device.resources.is_empty() {
        for net in &device.allowed_ips {
            println!("  - {net}");
        }
    }
    for resource in &device.resources {
        let description = if resource.description.is_empty() {
            String::new()
        } else {
            format!(" — {}", resource.description)
        };
        println!(
            "  - {}{} ({})",
            resource.name,
            description,
            resource.networks.join(", ")
        );
    }
}

/// For tests and docs: the directory's config path.
pub fn conf_path(dir: &Path) -> PathBuf {
    Paths::new(dir).conf()
}
