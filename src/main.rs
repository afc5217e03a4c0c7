//! `sesame`: the command line. Parses flags and hands over to the library; no logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Run the data plane alone, with the static [[peer]]s of the configuration.
    Gateway {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
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

/// The filters of `sesame audit export` (same meaning as the API's query parameters).
#[derive(clap::Args)]
struct AuditFilterArgs {
    /// From (included): 2026-01-31, 2026-01-31T08:00:00Z, or 7d for "7 days ago".
    #[arg(long)]
    since: Option<String>,
    /// Until (excluded), same forms as --since.
    #[arg(long)]
    until: Option<String>,
    /// Only events whose actor is this uid or which concern it.
    #[arg(long)]
    user: Option<String>,
    /// Only events about this device id.
    #[arg(long)]
    device: Option<String>,
    /// Only this action (auth.login, flow.allowed…).
    #[arg(long)]
    action: Option<String>,
    /// Only events about this resource (flows).
    #[arg(long)]
    resource: Option<String>,
    /// success, failure or denied.
    #[arg(long)]
    outcome: Option<String>,
    /// Only events from this client address.
    #[arg(long)]
    source_ip: Option<String>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write events (oldest first) to stdout as CSV or JSON lines, streamed page by page.
    Export {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        #[command(flatten)]
        filter: AuditFilterArgs,
        #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl"])]
        format: String,
    },
    /// Check the hash chain and the signed checkpoints: exit 0 only if intact, else print the
    /// first bad event id. With --export, check an exported JSONL copy, no database needed.
    Verify {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Checkpoint file (default: [audit] checkpoint_file).
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
        #[arg(long, default_value = "csv", value_parser = ["csv", "json", "table"])]
        format: String,
    },
    /// Who can reach a resource now (or what a user can reach), through which group and grant,
    /// with each device's last session and last flow.
    AccessReview {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        /// Resource name.
        #[arg(long, required_unless_present = "user", conflicts_with = "user")]
        resource: Option<String>,
        /// Or a user's uid: every resource their devices can reach, and why.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "csv", value_parser = ["csv", "json", "table"])]
        format: String,
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
        /// `table` (default) or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
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

fn report_format(s: &str) -> sesame::commands::audit_review_cli::ReportFormat {
    use sesame::commands::audit_review_cli::ReportFormat;
    match s {
        "json" => ReportFormat::Json,
        "table" => ReportFormat::Table,
        _ => ReportFormat::Csv,
    }
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
    if !matches!(cli.command, Command::Serve { .. } | Command::Gateway { .. }) {
        sesame::telemetry::init();
    }
    match cli.command {
        Command::Serve { config } => sesame::commands::serve(&config),
        Command::Gateway { config } => sesame::commands::gateway(&config),
        Command::Keygen {
            out,
            audit: false,
            if_missing,
        } => sesame::commands::keygen(&out, if_missing),
        Command::Keygen {
            out,
            audit: true,
            if_missing,
        } => sesame::commands::audit_cli::keygen(&out, if_missing),
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
        }) => {
            let format = if format == "json" {
                sesame::commands::store_admin::ListFormat::Json
            } else {
                sesame::commands::store_admin::ListFormat::Table
            };
            sesame::commands::store_admin::devices_list(&config, user.as_deref(), format)
        }
        Command::Audit(AuditCommand::Export {
            config,
            filter,
            format,
        }) => {
            let format = if format == "jsonl" {
                sesame::commands::audit_cli::ExportFormat::Jsonl
            } else {
                sesame::commands::audit_cli::ExportFormat::Csv
            };
            let params = sesame::audit::FilterParams {
                user: filter.user,
                device: filter.device,
                action: filter.action,
                resource: filter.resource,
                outcome: filter.outcome,
                source_ip: filter.source_ip,
                since: filter.since,
                until: filter.until,
            };
            sesame::commands::audit_cli::export(&config, &params, format)
        }
        Command::Audit(AuditCommand::Flows {
            config,
            resource,
            since,
            until,
            format,
        }) => sesame::commands::audit_review_cli::flows(
            &config,
            &resource,
            since.as_deref(),
            until.as_deref(),
            report_format(&format),
        ),
        Command::Audit(AuditCommand::AccessReview {
            config,
            resource,
            user,
            format,
        }) => sesame::commands::audit_review_cli::access_review_cmd(
            &config,
            resource.as_deref(),
            user.as_deref(),
            report_format(&format),
        ),
        Command::Audit(AuditCommand::Verify {
            config,
            checkpoints,
            public_key,
            export,
        }) => sesame::commands::audit_cli::verify(&sesame::commands::audit_cli::VerifyArgs {
            config: export.is_none().then_some(config.as_path()),
            checkpoints: checkpoints.as_deref(),
            public_key: public_key.as_deref(),
            export: export.as_deref(),
        }),
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
