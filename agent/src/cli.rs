//! Command line of `sesame-agent` and everything it prints (the only place that writes to stdout).
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use sesame::api::{codes, DeviceConfig};

use crate::enrol::{self, EnrolArgs, PasswordSource};
use crate::error::AgentError;
use crate::i18n::{Lang, Localized, Msg};
use crate::mfa::CodeSource;
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
        /// Accept a plain http:// portal outside this machine (labs only: the password and the
        /// device token cross the network unencrypted). Kept in agent.toml for later calls.
        #[arg(long)]
        insecure: bool,
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
        /// Read the second factor's code (asked when protected resources are closed) from the
        /// first line of standard input instead of a prompt.
        #[arg(long)]
        code_stdin: bool,
    },
    /// Open access to protected resources (payroll, HR…) with the code of your authenticator
    /// app, without touching the tunnel.
    Unlock {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Read the code from the first line of standard input instead of a prompt.
        #[arg(long)]
        code_stdin: bool,
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

fn read_code(stdin: bool, lang: Lang) -> Result<String, AgentError> {
    let source = if stdin {
        CodeSource::Stdin
    } else {
        CodeSource::Prompt
    };
    crate::mfa::read_code(source, lang)
}

/// Times a first code may be typed wrong before `enrol` gives up on confirming the factor.
const CONFIRM_TRIES: usize = 3;

/// Shows the factor the enrolment handed out (QR code in the terminal, the key as text), asks
/// its first code, and prints the recovery codes once.
fn register(
    paths: &Paths,
    registration: &sesame::api::mfa::MfaRegistration,
    source: CodeSource,
    lang: Lang,
) -> Result<(), AgentError> {
    println!("{}", crate::mfa::qr_terminal(&registration.otpauth_uri));
    say(
        &Msg::MfaRegister {
            secret: registration.secret.clone(),
        },
        lang,
    );
    let mut tries = 0;
    let codes = loop {
        tries += 1;
        let code = crate::mfa::read_code(source, lang)?;
        match crate::mfa::confirm(paths, &code, lang) {
            Ok(codes) => break codes,
            Err(AgentError::Portal(e))
                if e.code() == Some(codes::INVALID_OTP)
                    && source == CodeSource::Prompt
                    && tries < CONFIRM_TRIES =>
            {
                eprintln!("{}", Localized(&Msg::WrongOtp, lang));
            }
            Err(e) => return Err(e),
        }
    };
    say(&Msg::RecoveryCodes, lang);
    for code in codes {
        println!("  {code}");
    }
    Ok(())
}

/// Before `up`: when the laptop has protected resources and no open window, asks the code and
/// unlocks. A refusal is shown and the tunnel still comes up (the other resources answer).
fn unlock_if_closed(paths: &Paths, code_stdin: bool, lang: Lang) {
    let Ok(agent) = AgentState::load(paths) else {
        return;
    };
    let Live::Fresh(device) = ask_portal(&agent, lang) else {
        return;
    };
    if device.mfa_until.is_some() || !device.resources.iter().any(|r| r.mfa) {
        return;
    }
    let unlocked =
        read_code(code_stdin, lang).and_then(|code| crate::mfa::unlock(paths, &code, lang));
    match unlocked {
        Ok(until) => say(&Msg::Unlocked { until }, lang),
        Err(e) => eprintln!("{}", Localized(&e.to_msg(None), lang)),
    }
}

fn run(command: Command, lang: Lang) -> Result<(), AgentError> {
    match command {
        Command::Enrol {
            portal,
            code,
            user,
            password_stdin,
            ca_file,
            insecure,
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
                insecure,
                dir: &dir,
                lang,
            };
            #[cfg(target_os = "linux")]
            if let Some(pid) = crate::tunnel::running_pid(&Paths::new(&dir)) {
                return Err(AgentError::AlreadyRunning(pid));
            }
            let mut done = enrol::enrol(&args)?;
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
                    address: done.address.clone(),
                    conf: done.conf.display().to_string(),
                },
                lang,
            );
            match done.registration.take() {
                Some(registration) => {
                    register(&Paths::new(&dir), &registration, args.code_source(), lang)
                }
                None => Ok(()),
            }
        }
        Command::Unlock { dir, code_stdin } => {
            let until = crate::mfa::unlock(&Paths::new(dir), &read_code(code_stdin, lang)?, lang)?;
            say(&Msg::Unlocked { until }, lang);
            Ok(())
        }
        Command::Up {
            dir,
            interface,
            refresh,
            code_stdin,
        } => {
            let paths = Paths::new(dir);
            unlock_if_closed(&paths, code_stdin, lang);
            up(&paths, interface, refresh, lang)
        }
        Command::Down { dir, interface } => {
            let paths = Paths::new(dir);
            crate::mfa::lock(&paths, lang);
            down(&paths, interface.as_deref(), lang)
        }
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

/// What the portal said when `status` asked it (the config boxed: it dwarfs the other answers).
enum Live {
    Fresh(Box<DeviceConfig>),
    Revoked,
    Unreachable,
}

fn ask_portal(agent: &AgentState, lang: Lang) -> Live {
    let portal = match Portal::new(
        &agent.portal,
        agent.ca_file.as_deref(),
        agent.insecure,
        Duration::from_secs(5),
        lang,
    ) {
        Ok(portal) => portal,
        Err(_) => return Live::Unreachable,
    };
    match portal.device_config(&agent.device_token) {
        Ok(device) => Live::Fresh(Box::new(device)),
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
            Some(DeviceConfig::clone(device))
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
        print_sites(t, lang);
    }
    if let Some(device) = &device {
        print_resources(device, lang);
        if device.resources.iter().any(|r| r.mfa) {
            match &device.mfa_until {
                Some(until) => say(
                    &Msg::StatusMfaOpen {
                        until: until.clone(),
                    },
                    lang,
                ),
                None => say(&Msg::StatusMfaClosed, lang),
            }
        }
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

/// Each site's gateway, when there are several (one site: the lines above say it all).
fn print_sites(tunnel: &TunnelStatus, lang: Lang) {
    if tunnel.sites.len() < 2 {
        return;
    }
    say(&Msg::StatusSites, lang);
    for site in &tunnel.sites {
        let name = if site.site.is_empty() {
            "?".to_string()
        } else {
            site.site.clone()
        };
        say(
            &Msg::StatusSite {
                site: name,
                endpoint: site.endpoint.clone(),
                handshake_secs: site.last_handshake_age_secs,
                routes: site.routes.join(", "),
            },
            lang,
        );
    }
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
