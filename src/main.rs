//! `sesame`: the command line. Parses flags and hands over to the library; no logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sesame::audit::export::ExportFormat;
use sesame::audit::FilterParams;
use sesame::commands::audit_review_cli::ReportFormat;
use sesame::commands::site_gateway;
use sesame::commands::store_admin::ListFormat;

#[derive(Parser)]
#[command(
    name = "sesame",
    version,
    about = "Sesame: remote-work VPN access broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the portal, the gateway, directory sync and the audit writer in one process.
    Serve {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
    },
    /// Run the portal, directory sync, the audit jobs and the site gateways' feed, with no
    /// gateway: no TUN, no gateway key, no capability (the gateways run `sesame gateway`).
    Portal {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
    },
    /// Run the data plane alone: with the static [[peer]]s of the configuration, or, with
    /// --site (or [gateway] site), one site's gateway fed by the portals of [gateway] portals.
    Gateway {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// The site this gateway serves (overrides [gateway] site).
        #[arg(long)]
        site: Option<String>,
    },
    /// Write a new gateway private key (mode 0600) and print its public key; with --audit, the
    /// Ed25519 audit signing key instead.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// The audit signing key ([audit] signing_key_file) rather than a gateway key.
        #[arg(long)]
        audit: bool,
        /// Succeed without writing when FILE exists already (first start of the service).
        #[arg(long)]
        if_missing: bool,
    },
    /// Validate the configuration and print the effective policy.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
    },
    /// One-time enrolment codes for new laptops.
    #[command(subcommand)]
    EnrolCode(EnrolCodeCommand),
    /// Enrolled devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// The audit log: export, verify the hash chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The directory sync.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// The second factor: registration codes and resets (phone lost).
    #[command(subcommand)]
    Mfa(MfaCommand),
    /// Site gateways (`sesame portal` with `[[site]]`s).
    #[command(subcommand)]
    Site(SiteCommand),
}

#[derive(Subcommand)]
enum MfaCommand {
    /// Print a one-time registration code for USER alone on stdout (valid 7 days): with their
    /// password, it registers a factor. The current factor, if any, stays until then.
    Code {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Login (uid) of the person.
        #[arg(long)]
        user: String,
    },
    /// Phone lost: remove USER's factor, close their open access windows, and print a new
    /// one-time registration code alone on stdout.
    Reset {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Login (uid) of the person.
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Print a new token for a site's gateway (shown once, stored hashed); the site's previous
    /// token stops working.
    Token {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// The `[[site]]` name.
        #[arg(long)]
        site: String,
    },
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Show (--dry-run) or confirm (--apply) what a directory sync changes; a periodic sync
    /// that would suspend more than `max_changes_per_sync` devices waits for --apply.
    #[command(group(clap::ArgGroup::new("mode").required(true).args(["dry_run", "apply"])))]
    Sync {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Print the changes, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Make the changes, even over max_changes_per_sync.
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write events (oldest first) to stdout as CSV or JSON lines, streamed page by page.
    Export {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        // The filter: the same type, names and meaning as the API's query parameters.
        #[command(flatten)]
        filter: FilterParams,
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
    },
    /// Check the hash chain and the signed checkpoints: exit 0 only if intact, else print the
    /// first bad event id. With --export, check an exported JSONL copy, no database needed.
    Verify {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Checkpoint file (default: [audit] checkpoint_file), or captured log lines holding
        /// SESAME_AUDIT_CHECKPOINT (`journalctl -u sesame -o cat | grep SESAME_AUDIT_CHECKPOINT`).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Audit public key, base64 (default: from [audit] signing_key_file).
        #[arg(long)]
        public_key: Option<String>,
        /// A `sesame audit export --format jsonl` file; needs --checkpoints and --public-key.
        #[arg(long, requires_all = ["checkpoints", "public_key"])]
        export: Option<PathBuf>,
    },
    /// Who reached a resource: user, device, first/last seen, bytes (flow.allowed records).
    Flows {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Resource name ([[resource]] name).
        #[arg(long)]
        resource: String,
        /// From (included), same forms as export --since.
        #[arg(long)]
        since: Option<String>,
        /// Until (excluded).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
        format: ReportFormat,
    },
    /// Who can reach a resource now (or what a user can reach), through which group and grant,
    /// with each device's last session and last flow.
    AccessReview {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Resource name.
        #[arg(long, required_unless_present_any = ["user", "site"], conflicts_with_all = ["user", "site"])]
        resource: Option<String>,
        /// Or a user's uid: every resource their devices can reach, and why.
        #[arg(long, conflicts_with = "site")]
        user: Option<String>,
        /// Or a site ([[site]] name, or `local` for the resources without a site): who can
        /// reach each of its resources.
        #[arg(long)]
        site: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
        format: ReportFormat,
    },
}

#[derive(Subcommand)]
enum EnrolCodeCommand {
    /// Create a code: printed alone on stdout (details on stderr). With --csv, one per row of a
    /// `user,device` CSV file, printed as CSV `user,device,code,expires_at`; all or none.
    /// The directory is not consulted: the user is checked when the code is redeemed.
    Create {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Login (uid) of the person who will enrol the laptop.
        #[arg(long, required_unless_present = "csv", conflicts_with = "csv")]
        user: Option<String>,
        /// Name of the laptop, as IT staff will see it.
        #[arg(long, required_unless_present = "csv", conflicts_with = "csv")]
        device: Option<String>,
        /// Validity of the code, e.g. 72h, 7d.
        #[arg(long, default_value = "72h")]
        ttl: String,
        /// Bulk: a CSV file with header `user,device`.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DevicesCommand {
    /// List every device (revoked ones included).
    List {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Only this user's devices.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Revoke a device: its tunnel stops and its token is refused.
    Revoke {
        /// Device id, as shown by `sesame devices list`.
        id: i64,
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Cut it at the running gateway through its local admin socket, even with the
        /// database down; the store is updated (and audited) when it answers again.
        #[arg(long)]
        emergency: bool,
    },
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sesame: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // Servers install logging as their [log] section says; the other commands log as text.
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::Portal { .. } | Command::Gateway { .. }
    ) {
        sesame::telemetry::init();
    }
    match cli.command {
        Command::Serve { config } => sesame::commands::serve(&config),
        Command::Portal { config } => sesame::commands::portal(&config),
        Command::Site(SiteCommand::Token { config, site }) => {
            sesame::commands::site_cli::token(&config, &site)
        }
        Command::Gateway { config, site } => site_gateway::gateway(&config, site.as_deref()),
        Command::Keygen {
            out,
            audit,
            if_missing,
        } => keygen(&out, audit, if_missing),
        Command::CheckConfig { config } => sesame::commands::check_config(&config),
        Command::EnrolCode(EnrolCodeCommand::Create {
            config,
            user,
            device,
            ttl,
            csv,
        }) => sesame::commands::store_admin::enrol_code_create(
            &config,
            user.as_deref(),
            device.as_deref(),
            &ttl,
            csv.as_deref(),
        ),
        Command::Devices(DevicesCommand::List {
            config,
            user,
            format,
        }) => sesame::commands::store_admin::devices_list(&config, user.as_deref(), format),
        Command::Audit(cmd) => audit(cmd),
        Command::Mfa(command) => mfa(command),
        Command::Directory(DirectoryCommand::Sync {
            config,
            dry_run: _,
            apply,
        }) => sesame::commands::directory_cli::sync(&config, apply),
        Command::Devices(DevicesCommand::Revoke {
            id,
            config,
            reason,
            emergency: true,
        }) => {
            sesame::commands::store_admin::devices_revoke_emergency(&config, id, reason.as_deref())
        }
        Command::Devices(DevicesCommand::Revoke {
            id,
            config,
            reason,
            emergency: false,
        }) => sesame::commands::store_admin::devices_revoke(&config, id, reason.as_deref()),
    }
}

/// `sesame mfa code|reset`
fn mfa(command: MfaCommand) -> anyhow::Result<ExitCode> {
    use sesame::commands::mfa_cli::{run, MfaAction};
    match command {
        MfaCommand::Code { config, user } => run(&config, &user, MfaAction::Code),
        MfaCommand::Reset { config, user } => run(&config, &user, MfaAction::Reset),
    }
}

/// `sesame keygen`: a gateway key, or with `--audit` the audit signing key.
fn keygen(out: &std::path::Path, audit: bool, if_missing: bool) -> anyhow::Result<ExitCode> {
    if audit {
        sesame::commands::audit_cli::keygen(out, if_missing)
    } else {
        sesame::commands::keygen(out, if_missing)
    }
}

/// `sesame audit …`
fn audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Export {
            config,
            filter,
            format,
        } => sesame::commands::audit_cli::export(&config, &filter, format),
        AuditCommand::Flows {
            config,
            resource,
            since,
            until,
            format,
        } => sesame::commands::audit_review_cli::flows(
            &config,
            &resource,
            since.as_deref(),
            until.as_deref(),
            format,
        ),
        AuditCommand::AccessReview {
            config,
            resource,
            user,
            site,
            format,
        } => sesame::commands::audit_review_cli::access_review_cmd(
            &config,
            sesame::service::audit::ReviewQuery {
                resource: resource.as_deref(),
                user: user.as_deref(),
                site: site.as_deref(),
            },
            format,
        ),
        AuditCommand::Verify {
            config,
            checkpoints,
            public_key,
            export,
        } => sesame::commands::audit_cli::verify(&sesame::commands::audit_cli::VerifyArgs {
            config: export.is_none().then_some(config.as_path()),
            checkpoints: checkpoints.as_deref(),
            public_key: public_key.as_deref(),
            export: export.as_deref(),
        }),
    }
}
