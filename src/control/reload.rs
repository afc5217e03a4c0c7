//! Configuration reload (SIGHUP, `systemctl reload`): what changed, what applies live, what waits for a restart.
//!
//! Live: resources, grants, static peers, `[roles]`, `[devices]`, `[directory]` and the log
//! level, for the control plane, the services and the portal alike (one [`LiveConfig`]). The
//! listeners, `[portal]`, the gateway's interface, network and key, the database, `[audit]` and
//! the log format are read at start: a reload keeps the running values and says a restart is
//! needed.
//!
//! [`LiveConfig`]: crate::config::LiveConfig

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::Serialize;

use tokio::sync::{mpsc, watch};

use crate::audit::{Action, AuditContext, NewAuditEvent, Outcome};
use crate::config::{Config, ConfigError};
use crate::directory::{DirFuture, Directory, DirectoryUser, LdapDirectory};
use crate::store::Store;

use super::{ControlPlane, DirectorySync};
use crate::metrics::Metrics;

/// What a reload changed, as recorded in the `config.reloaded` audit event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigChanges {
    pub resources_added: Vec<String>,
    pub resources_removed: Vec<String>,
    pub resources_changed: Vec<String>,
    /// Groups whose grants appeared, disappeared or changed.
    pub grants_changed: Vec<String>,
    pub peers_added: Vec<String>,
    pub peers_removed: Vec<String>,
    pub peers_changed: Vec<String>,
    pub vpn_users_changed: bool,
    /// `it_staff`, `auditors` or a delegated role changed (applied at each next request).
    pub roles_changed: bool,
    pub directory_changed: bool,
    pub log_level_changed: bool,
    /// Sections whose new values wait for a restart (the running ones are kept).
    pub restart_needed: Vec<&'static str>,
}

impl ConfigChanges {
    /// True when nothing at all differs.
    pub fn is_empty(&self) -> bool {
        *self == ConfigChanges::default()
    }
}

/// Names added, removed and changed between two sets of named items.
type NamedDiff = (Vec<String>, Vec<String>, Vec<String>);

fn diff_named<'a, T: PartialEq + 'a>(
    old: impl Iterator<Item = (&'a String, &'a T)>,
    new: impl Iterator<Item = (&'a String, &'a T)>,
) -> NamedDiff {
    let old: BTreeMap<_, _> = old.collect();
    let new: BTreeMap<_, _> = new.collect();
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for (name, item) in &new {
        match old.get(name) {
            None => added.push((*name).clone()),
            Some(o) if o != item => changed.push((*name).clone()),
            Some(_) => {}
        }
    }
    let removed = old
        .keys()
        .filter(|n| !new.contains_key(*n))
        .map(|n| (*n).clone())
        .collect();
    (added, removed, changed)
}

/// Compares the running configuration with the new one.
pub fn changes(old: &Config, new: &Config) -> ConfigChanges {
    let mut c = ConfigChanges::default();
    (c.resources_added, c.resources_removed, c.resources_changed) = diff_named(
        old.policy.resources().map(|r| (&r.name, r)),
        new.policy.resources().map(|r| (&r.name, r)),
    );
    (c.peers_added, c.peers_removed, c.peers_changed) = diff_named(
        old.peers.iter().map(|p| (&p.name, p)),
        new.peers.iter().map(|p| (&p.name, p)),
    );
    let old_grants: BTreeMap<_, _> = old.policy.grants().collect();
    let new_grants: BTreeMap<_, _> = new.policy.grants().collect();
    let mut groups: Vec<&str> = old_grants
        .keys()
        .chain(new_grants.keys())
        .copied()
        .collect();
    groups.sort_unstable();
    groups.dedup();
    c.grants_changed = groups
        .into_iter()
        .filter(|g| old_grants.get(g) != new_grants.get(g))
        .map(str::to_string)
        .collect();
    c.vpn_users_changed = old.roles.vpn_users != new.roles.vpn_users;
    c.roles_changed = old.roles.it_staff != new.roles.it_staff
        || old.roles.auditors != new.roles.auditors
        || old.roles.delegated != new.roles.delegated;
    c.directory_changed = old.directory != new.directory;
    c.log_level_changed = old.log.level != new.log.level;
    let restart = [
        ("audit", old.audit != new.audit),
        ("portal", old.portal != new.portal),
        ("gateway", old.gateway != new.gateway),
        ("database", old.database != new.database),
        ("metrics", old.metrics != new.metrics),
        ("log.format", old.log.format != new.log.format),
    ];
    c.restart_needed = restart
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect();
    c
}

/// The configuration to put in force: the new one, except the sections read at start only.
pub fn live_config(old: &Config, new: Config) -> Config {
    Config {
        path: old.path.clone(),
        audit: old.audit.clone(),
        portal: old.portal.clone(),
        gateway: old.gateway.clone(),
        database: old.database.clone(),
        metrics: old.metrics.clone(),
        // The provider and its key are built at start; `mfa = true` resources follow the policy.
        mfa: old.mfa.clone(),
        log: crate::config::LogConfig {
            format: old.log.format,
            level: new.log.level,
        },
        ..new
    }
}

/// Re-reads the file the running configuration came from; on success returns the configuration
/// to put in force and what changed. On error nothing changes: the caller logs it.
pub fn reread(old: &Config) -> Result<(Config, ConfigChanges), ConfigError> {
    let new = Config::load(&old.path)?;
    let changes = changes(old, &new);
    Ok((live_config(old, new), changes))
}

/// What a reload in `sesame serve` swaps: the control plane's configuration (peers republished
/// through the diff), the directory connection, the sync loop's settings, the log level.
pub struct ServeReloader {
    pub control: Arc<ControlPlane>,
    pub directory: Arc<SwappableDirectory>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

/// A running directory sync loop and the switch that stops it.
struct SyncTask {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SyncTask {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl ServeReloader {
    /// Applies each SIGHUP (a message on `hups`) until `shutdown`; owns the directory sync loop,
    /// restarted with the new settings when a reload changes them.
    pub async fn run(self, mut hups: mpsc::Receiver<()>, mut shutdown: watch::Receiver<bool>) {
        let mut sync = self.start_sync(&self.control.config());
        loop {
            tokio::select! {
                hup = hups.recv() => {
                    if hup.is_none() {
                        break;
                    }
                    if let Some(changes) = self.reload().await {
                        if changes.directory_changed || changes.vpn_users_changed {
                            if let Some(old) = sync.take() {
                                old.stop().await;
                            }
                            sync = self.start_sync(&self.control.config());
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if let Some(s) = sync {
            s.stop().await;
        }
    }

    fn start_sync(&self, config: &Config) -> Option<SyncTask> {
        let dir = config.directory.as_ref()?;
        let (stop, stop_rx) = watch::channel(false);
        let sync = DirectorySync::new(
            self.store.clone(),
            Arc::clone(&self.directory) as Arc<dyn Directory>,
            Some(Arc::clone(&self.control)),
            config.roles.vpn_users.clone(),
            dir,
            Arc::clone(&self.metrics),
        );
        let task = tokio::spawn(sync.run(dir.sync_interval, stop_rx));
        Some(SyncTask { stop, task })
    }

    /// One reload: all or nothing. Returns what changed when the new file was put in force.
    pub async fn reload(&self) -> Option<ConfigChanges> {
        let old = self.control.config();
        let result = self.prepare(&old);
        let system = AuditContext::system();
        let target = old.path.display().to_string();
        let (live, changes) = match result {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused: the running configuration stays; fix the file and reload again");
                self.metrics.reload(false);
                let ev = NewAuditEvent::new(Action::ConfigReloaded, &system, target)
                    .outcome(Outcome::Failure)
                    .details(serde_json::json!({ "error": e.to_string() }));
                if let Err(e) = self.store.append_audit(&ev).await {
                    tracing::warn!(error = %e, "cannot write the config.reloaded audit event");
                }
                return None;
            }
        };
        let level = live.log.level;
        if let Err(e) = self.control.replace_config(Arc::new(live)).await {
            tracing::warn!(error = %e, "reloaded configuration in force; the peer set is republished when the database answers");
        }
        crate::telemetry::set_level(level);
        log_changes(&changes);
        self.metrics.reload(true);
        let details = serde_json::to_value(&changes).unwrap_or_default();
        let ev = NewAuditEvent::new(Action::ConfigReloaded, &system, target).details(details);
        if let Err(e) = self.store.append_audit(&ev).await {
            tracing::warn!(error = %e, "cannot write the config.reloaded audit event");
        }
        Some(changes)
    }

    /// Reads and checks the new file, and connects the new directory settings, without
    /// changing anything yet.
    fn prepare(&self, old: &Config) -> Result<(Config, ConfigChanges), ReloadError> {
        let (live, changes) = reread(old)?;
        live.check_secret_files()?;
        let Some(dir) = &live.directory else {
            return Err(ReloadError::NoDirectory);
        };
        if changes.directory_changed {
            let directory = LdapDirectory::new(dir).map_err(ReloadError::Directory)?;
            self.directory.replace(Arc::new(directory));
        }
        Ok((live, changes))
    }
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    SecretFile(#[from] crate::secret_file::SecretFileError),
    #[error("the [directory] section is gone: `sesame serve` needs it")]
    NoDirectory,
    #[error("new [directory] settings: {0}")]
    Directory(#[source] crate::directory::DirectoryError),
}

/// One log line for an applied reload, and a warning for what waits for a restart.
pub fn log_changes(changes: &ConfigChanges) {
    tracing::info!(
        resources_added = ?changes.resources_added,
        resources_removed = ?changes.resources_removed,
        resources_changed = ?changes.resources_changed,
        grants_changed = ?changes.grants_changed,
        peers_added = ?changes.peers_added,
        peers_removed = ?changes.peers_removed,
        peers_changed = ?changes.peers_changed,
        vpn_users_changed = changes.vpn_users_changed,
        roles_changed = changes.roles_changed,
        directory_changed = changes.directory_changed,
        log_level_changed = changes.log_level_changed,
        "configuration reloaded"
    );
    if !changes.restart_needed.is_empty() {
        tracing::warn!(
            sections = ?changes.restart_needed,
            "these settings changed but apply at the next restart (`systemctl restart sesame`); the running values stay"
        );
    }
}

/// A directory whose settings a reload can replace: requests in flight finish on the old one.
/// It also times every request for the LDAP latency histogram.
pub struct SwappableDirectory {
    inner: ArcSwap<Arc<dyn Directory>>,
    metrics: Arc<Metrics>,
}

impl SwappableDirectory {
    pub fn new(directory: Arc<dyn Directory>, metrics: Arc<Metrics>) -> Self {
        SwappableDirectory {
            inner: ArcSwap::from_pointee(directory),
            metrics,
        }
    }

    /// Later requests go to `directory`.
    pub fn replace(&self, directory: Arc<dyn Directory>) {
        self.inner.store(Arc::new(directory));
    }

    fn current(&self) -> Arc<dyn Directory> {
        Arc::clone(&self.inner.load())
    }
}

impl Directory for SwappableDirectory {
    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a str,
    ) -> DirFuture<'a, DirectoryUser> {
        let dir = self.current();
        Box::pin(async move {
            let started = Instant::now();
            let r = dir.authenticate(username, password).await;
            self.metrics.ldap_latency(started.elapsed());
            r
        })
    }

    fn lookup<'a>(&'a self, username: &'a str) -> DirFuture<'a, Option<DirectoryUser>> {
        let dir = self.current();
        Box::pin(async move {
            let started = Instant::now();
            let r = dir.lookup(username).await;
            self.metrics.ldap_latency(started.elapsed());
            r
        })
    }

    fn lookup_many<'a>(
        &'a self,
        usernames: &'a [String],
        in_flight: usize,
    ) -> DirFuture<'a, Vec<Option<DirectoryUser>>> {
        let dir = self.current();
        Box::pin(async move { dir.lookup_many(usernames, in_flight).await })
    }

    fn ping(&self) -> DirFuture<'_, ()> {
        let dir = self.current();
        Box::pin(async move { dir.ping().await })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    const KEY_A: &str = "mB1Xmcm9Bqi8Dxy9Yz6rIHzC9jJbYp7vDXXHa+VfRVI=";

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("/etc/sesame/sesame.toml"), text).unwrap()
    }

    const BASE: &str = r#"
[[resource]]
name = "paie"
allow = ["198.18.10.10/32 tcp:443"]
[[grant]]
group = "cn=paie,ou=groups,dc=example,dc=org"
resources = ["paie"]
"#;

    #[test]
    fn identical_files_change_nothing() {
        assert!(changes(&parse(BASE), &parse(BASE)).is_empty());
    }

    #[test]
    fn a_new_resource_granted_and_a_static_peer_are_reported_and_applied() {
        let new = format!(
            r#"{BASE}
[[resource]]
name = "rh"
allow = ["198.18.20.0/24 tcp:443"]
[[grant]]
group = "cn=rh,ou=groups,dc=example,dc=org"
resources = ["rh"]
[[peer]]
name = "supervision"
public_key = "{KEY_A}"
address = "100.64.255.1"
resources = ["rh"]
[log]
level = "debug"
"#
        );
        let (old, new) = (parse(BASE), parse(&new));
        let c = changes(&old, &new);
        assert_eq!(c.resources_added, ["rh"]);
        assert_eq!(c.grants_changed, ["cn=rh,ou=groups,dc=example,dc=org"]);
        assert_eq!(c.peers_added, ["supervision"]);
        assert!(c.log_level_changed);
        assert!(!c.vpn_users_changed);
        assert!(c.restart_needed.is_empty());
        let live = live_config(&old, new);
        assert!(live.policy.resource("rh").is_some());
        assert_eq!(live.peers.len(), 1);
    }

    #[test]
    fn removed_and_changed_items_are_told_apart() {
        let with_peer = format!(
            "{BASE}\n[[resource]]\nname = \"rh\"\nallow = [\"198.18.20.0/24 tcp:443\"]\n\
             [[peer]]\nname = \"supervision\"\npublic_key = \"{KEY_A}\"\naddress = \"100.64.255.1\"\n"
        );
        let changed = BASE.replace("tcp:443", "tcp:8443");
        let c = changes(&parse(&with_peer), &parse(&changed));
        assert_eq!(c.resources_removed, ["rh"]);
        assert_eq!(c.resources_changed, ["paie"]);
        assert_eq!(c.peers_removed, ["supervision"]);
        assert!(c.resources_added.is_empty() && c.peers_added.is_empty());
        assert!(c.grants_changed.is_empty());
    }

    #[test]
    fn roles_apply_live() {
        let it = "[roles]\nit_staff = [\"cn=dsi,dc=x\"]\n";
        let old = parse(&format!("{it}{BASE}"));
        let new = parse(&format!(
            "{}{BASE}",
            it.replace("cn=dsi,dc=x", "cn=dsi-56,dc=x")
        ));
        let c = changes(&old, &new);
        assert!(c.roles_changed && !c.vpn_users_changed);
        assert!(c.restart_needed.is_empty(), "{:?}", c.restart_needed);
        let live = live_config(&old, new);
        assert_eq!(live.roles.it_staff, ["cn=dsi-56,dc=x"]);
    }

    #[test]
    fn start_only_sections_keep_the_running_values_and_ask_for_a_restart() {
        let old = parse(BASE);
        let new = parse(&format!(
            "[gateway]\nlisten = \"0.0.0.0:51821\"\n[log]\nformat = \"json\"\n{BASE}"
        ));
        let c = changes(&old, &new);
        assert_eq!(c.restart_needed, ["gateway", "log.format"]);
        let live = live_config(&old, new);
        assert_eq!(live.gateway, old.gateway);
        assert_eq!(live.log, old.log);
    }
}
