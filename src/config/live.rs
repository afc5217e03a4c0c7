//! The configuration in force: one value every role reads per request and a reload swaps whole.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Config;

/// The live configuration, shared by the control plane, the services, the portal and its pages.
/// Cloning shares it: a reload ([`LiveConfig::replace`]) is seen by every clone at their next
/// [`LiveConfig::get`], while a request already holding the old one finishes with it.
#[derive(Clone)]
pub struct LiveConfig(Arc<ArcSwap<Config>>);

impl LiveConfig {
    pub fn new(config: Config) -> Self {
        LiveConfig::from(Arc::new(config))
    }

    /// The configuration in force now (read it once per request and keep it for the request).
    pub fn get(&self) -> Arc<Config> {
        self.0.load_full()
    }

    /// Puts `config` in force for every holder of this live configuration.
    pub fn replace(&self, config: Arc<Config>) {
        self.0.store(config);
    }
}

impl From<Arc<Config>> for LiveConfig {
    fn from(config: Arc<Config>) -> Self {
        LiveConfig(Arc::new(ArcSwap::new(config)))
    }
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LiveConfig").field(&self.get().path).finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_is_seen_by_every_clone() {
        let parse = |text: &str| Config::parse(std::path::Path::new("/t.toml"), text).unwrap();
        let live = LiveConfig::new(parse(""));
        let portal = live.clone();
        let before = portal.get();
        assert!(before.policy.resource("rh").is_none());
        live.replace(Arc::new(parse(
            "[[resource]]\nname = \"rh\"\nallow = [\"198.18.20.0/24 tcp:443\"]\n",
        )));
        assert!(portal.get().policy.resource("rh").is_some());
        // A request that read the old one keeps it to its end.
        assert!(before.policy.resource("rh").is_none());
    }
}
