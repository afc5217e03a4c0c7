//! `sesame directory sync --dry-run|--apply`: shows, or confirms, what a directory sync would
//! change, in particular a pass held over `directory.max_changes_per_sync`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;
use crate::control::{DirectorySync, SyncMode};
use crate::directory::{Directory, LdapDirectory};
use crate::metrics::Metrics;
use crate::store::Store;

/// `--dry-run` prints the plan and writes nothing; `apply` runs a confirmed pass (no limit).
pub fn sync(config_path: &Path, apply: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let dir_cfg = config.directory.clone().with_context(|| {
        format!(
            "{}: la section [directory] manque / the [directory] section is missing",
            config_path.display()
        )
    })?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let store = Store::connect(&config.database.url).await.context(
            "impossible d'ouvrir la base de données : vérifiez [database] url / cannot open the database: check [database] url",
        )?;
        let directory: Arc<dyn Directory> = Arc::new(
            LdapDirectory::new(&dir_cfg).context("preparing the directory ([directory])")?,
        );
        let sync = DirectorySync::new(
            store.clone(),
            directory,
            None,
            config.roles.vpn_users.clone(),
            &dir_cfg,
            Arc::new(Metrics::default()),
        );
        let mut out = std::io::stdout().lock();
        if apply {
            let r = sync.sync(SyncMode::Confirmed).await?;
            writeln!(
                out,
                "applied: {} user(s) checked, {} group change(s), {} device(s) suspended, {} restored, {} revoked (suspended past suspend_grace)",
                r.checked, r.groups_changed, r.devices_suspended, r.devices_restored, r.devices_revoked
            )?;
        } else {
            let plan = sync.plan().await?;
            for line in plan.describe() {
                writeln!(out, "{line}")?;
            }
            writeln!(
                out,
                "dry run: {} user(s) checked, {} device(s) to suspend (limit {} of {} active), {} to restore; nothing written{}",
                plan.users.len(),
                plan.suspensions(),
                plan.limit,
                plan.active_devices,
                plan.restorations(),
                if plan.holds() {
                    "; over directory.max_changes_per_sync: the periodic sync applies disabled accounts and groups left, and holds the suspensions of users not found; run with --apply to confirm"
                } else {
                    ""
                }
            )?;
        }
        out.flush().context("writing to stdout")?;
        store.close().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
