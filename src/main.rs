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
    /// Write a new gateway private key (mode 0600) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate the configuration and print the effective policy.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    sesame::telemetry::init();
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
    match cli.command {
        Command::Serve { config } => sesame::commands::serve(&config),
        Command::Gateway { config } => sesame::commands::gateway(&config),
        Command::Keygen { out } => sesame::commands::keygen(&out),
        Command::CheckConfig { config } => sesame::commands::check_config(&config),
    }
}
