//! The gateway's last good peer set (and each peer's last endpoint) on local disk, authenticated
//! with an HMAC key kept beside the gateway key, never in the database: `sesame serve` restarts
//! from it when the store is unreachable (fail-static), and re-initiates handshakes from it.
//!
//! File format: a first line `sesame-peer-cache 1 <hex HMAC-SHA256 of the rest>`, then the
//! JSON body. The body names the gateway's public key, so a copy from another gateway is
//! refused even if someone copied its key file too, and `written_at`: when the database (or,
//! for a site gateway, a portal) last confirmed the set. A cache older than `[gateway]
//! max_cache_age` is refused at start ([`check_age`]). Each device carries its key's expiry, so
//! a key expiring while the database is down still leaves on time; a cache written before
//! expiries were kept has none (those peers are bounded by the cache's age only).

use crate::key::PublicKey;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::desired::ActiveDevice;

/// The cache file, in the gateway's state directory (beside its private key).
pub const CACHE_FILE: &str = "peer-cache.json";
/// The HMAC key (32 random bytes, hex, mode 0600), beside the cache.
pub const KEY_FILE: &str = "peer-cache.key";
const MAGIC: &str = "sesame-peer-cache 1";
/// While the database (or a portal) answers, the cache is rewritten at least this often even
/// when the set does not change, so that its age says when the set was last confirmed.
pub const REFRESH: Duration = Duration::from_secs(600);

type HmacSha256 = Hmac<Sha256>;

/// Why the cache cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerCacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the key file is not 64 hex characters")]
    BadKey { path: PathBuf },
    #[error("{path}: authentication failed (modified, or written with another key): refused")]
    Tampered { path: PathBuf },
    #[error("{path}: written by another gateway (public key {found}): refused")]
    Foreign { path: PathBuf, found: PublicKey },
    #[error("{path}: unreadable content: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} : cache confirmé il y a {age}, plus que [gateway] max_cache_age ({max}) : refusé, la passerelle démarre sans pair en cache et attend sa base de données ou son portail ; rétablissez-les (ou, pour une panne longue voulue, augmentez max_cache_age et redémarrez) / {path}: cache last confirmed {age} ago, more than [gateway] max_cache_age ({max}): refused, the gateway starts with no cached peer and waits for its database or portal; bring them back (or, for an intended long outage, raise max_cache_age and restart)"
    )]
    TooOld {
        path: PathBuf,
        age: String,
        max: String,
    },
}

/// Refuses a cache written (last confirmed) at `written_at` if it is older than `max_age` at
/// `now_ms`. A time in the future (a clock set back) counts as fresh.
pub fn check_age(
    path: &Path,
    written_at: i64,
    now_ms: i64,
    max_age: Duration,
) -> Result<(), PeerCacheError> {
    let age = now_ms.saturating_sub(written_at);
    if age <= crate::time::duration_ms(max_age) {
        return Ok(());
    }
    let secs = |ms: i64| Duration::from_secs(u64::try_from(ms / 1000).unwrap_or(0));
    Err(PeerCacheError::TooOld {
        path: path.to_path_buf(),
        age: humantime::format_duration(secs(age)).to_string(),
        max: humantime::format_duration(max_age).to_string(),
    })
}

/// One enrolled device as last published, with the endpoint its traffic last came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedDevice {
    pub id: i64,
    pub username: String,
    /// Standard base64, as `wg` prints it.
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
    pub groups: Vec<String>,
    pub endpoint: Option<SocketAddr>,
    /// The device's access window end as last published: with the portal down, the window
    /// still ends on time (the gateway's clock), and none opens (only the portal opens one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_until_ms: Option<i64>,
    /// When the device's key expires (unix ms): with the database down, the peer is removed at
    /// that instant (the gateway's clock). `None`: no expiry, or a cache written before
    /// expiries were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_expires_at: Option<i64>,
}

impl CachedDevice {
    pub fn new(d: &ActiveDevice, endpoint: Option<SocketAddr>) -> CachedDevice {
        CachedDevice {
            id: d.id,
            username: d.username.clone(),
            public_key: d.public_key,
            address: d.address,
            groups: d.groups.clone(),
            endpoint,
            mfa_until_ms: d.mfa_until_ms,
            key_expires_at: d.key_expires_at,
        }
    }

    /// Back to the control plane's type.
    pub fn active(&self) -> ActiveDevice {
        ActiveDevice {
            id: self.id,
            username: self.username.clone(),
            public_key: self.public_key,
            address: self.address,
            groups: self.groups.clone(),
            mfa_until_ms: self.mfa_until_ms,
            name: String::new(),
            key_expires_at: self.key_expires_at,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    gateway_public_key: PublicKey,
    /// Unix ms: when the store last confirmed the set (refused past `max_cache_age`).
    written_at: i64,
    devices: Vec<CachedDevice>,
}

/// The cache of one gateway, keyed by its state directory.
pub struct PeerCache {
    path: PathBuf,
    key: [u8; 32],
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PeerCacheError + '_ {
    move |source| PeerCacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl PeerCache {
    /// Opens the cache of the gateway whose private key lives in `state_dir`, creating its
    /// HMAC key (0600) on first use.
    pub fn open(state_dir: &Path) -> Result<PeerCache, PeerCacheError> {
        let key_path = state_dir.join(KEY_FILE);
        let text = match std::fs::read_to_string(&key_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
                let text = hex::encode(key);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path)
                    .map_err(io(&key_path))?;
                f.write_all(format!("{text}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io(&key_path))?;
                text
            }
            Err(e) => return Err(io(&key_path)(e)),
        };
        let key: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(PeerCacheError::BadKey { path: key_path })?;
        Ok(PeerCache {
            path: state_dir.join(CACHE_FILE),
            key,
        })
    }

    /// Another cache file in the same state directory, sealed with the same key (the site
    /// gateway's feed state, the static peers' endpoints).
    pub fn sibling(&self, file_name: &str) -> PeerCache {
        PeerCache {
            path: self.path.with_file_name(file_name),
            key: self.key,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `body` in the same sealed format as [`PeerCache::save`]: the
    /// gateway's public key and the write time beside `body`'s own fields.
    pub fn save_value<T: serde::Serialize>(
        &self,
        gateway_public: &PublicKey,
        written_at: i64,
        body: &T,
    ) -> Result<(), PeerCacheError> {
        let corrupt = |source| PeerCacheError::Corrupt {
            path: self.path.clone(),
            source,
        };
        let mut value = serde_json::to_value(body).map_err(corrupt)?;
        if let serde_json::Value::Object(map) = &mut value {
            map.insert(
                "gateway_public_key".into(),
                serde_json::to_value(gateway_public).map_err(corrupt)?,
            );
            map.insert("written_at".into(), written_at.into());
        }
        self.seal(&serde_json::to_vec(&value).map_err(corrupt)?)
    }

    /// What [`PeerCache::save_value`] wrote: `(written_at, body)`, `None` if there is no file;
    /// refused as [`PeerCache::load`] refuses.
    pub fn load_value<T: serde::de::DeserializeOwned>(
        &self,
        gateway_public: &PublicKey,
    ) -> Result<Option<(i64, T)>, PeerCacheError> {
        #[derive(serde::Deserialize)]
        struct Envelope<T> {
            gateway_public_key: PublicKey,
            written_at: i64,
            #[serde(flatten)]
            body: T,
        }
        let Some(body) = self.unseal()? else {
            return Ok(None);
        };
        let e: Envelope<T> =
            serde_json::from_slice(&body).map_err(|source| PeerCacheError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        if e.gateway_public_key != *gateway_public {
            return Err(PeerCacheError::Foreign {
                path: self.path.clone(),
                found: e.gateway_public_key,
            });
        }
        Ok(Some((e.written_at, e.body)))
    }

    fn seal(&self, body: &[u8]) -> Result<(), PeerCacheError> {
        let tag = hex::encode(self.mac(body).finalize().into_bytes());
        let head = format!("{MAGIC} {tag}\n");
        crate::durable::replace(&self.path, 0o600, &[head.as_bytes(), body]).map_err(|e| {
            PeerCacheError::Io {
                path: e.path,
                source: e.source,
            }
        })
    }

    /// The authenticated body, `None` if there is no file.
    fn unseal(&self) -> Result<Option<Vec<u8>>, PeerCacheError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&self.path)(e)),
        };
        let tampered = || PeerCacheError::Tampered {
            path: self.path.clone(),
        };
        let nl = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(tampered)?;
        let (head, body) = (&bytes[..nl], &bytes[nl + 1..]);
        let tag = std::str::from_utf8(head)
            .ok()
            .and_then(|h| h.strip_prefix(MAGIC))
            .and_then(|t| hex::decode(t.trim()).ok())
            .ok_or_else(tampered)?;
        self.mac(body).verify_slice(&tag).map_err(|_| tampered())?;
        Ok(Some(body.to_vec()))
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(body);
        mac
    }

    /// Replaces the cache atomically and durably ([`crate::durable::replace`]), mode 0600.
    pub fn save(
        &self,
        gateway_public: &PublicKey,
        written_at: i64,
        devices: Vec<CachedDevice>,
    ) -> Result<(), PeerCacheError> {
        let body = serde_json::to_vec(&Body {
            gateway_public_key: *gateway_public,
            written_at,
            devices,
        })
        .map_err(|source| PeerCacheError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let tag = hex::encode(self.mac(&body).finalize().into_bytes());
        let head = format!("{MAGIC} {tag}\n");
        crate::durable::replace(&self.path, 0o600, &[head.as_bytes(), &body]).map_err(|e| {
            PeerCacheError::Io {
                path: e.path,
                source: e.source,
            }
        })
    }

    /// The cached devices, `None` if there is no cache yet. A modified file, one written with
    /// another key or by another gateway is refused.
    pub fn load(
        &self,
        gateway_public: &PublicKey,
    ) -> Result<Option<(i64, Vec<CachedDevice>)>, PeerCacheError> {
        let Some(body) = self.unseal()? else {
            return Ok(None);
        };
        let body: Body =
            serde_json::from_slice(&body).map_err(|source| PeerCacheError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        if body.gateway_public_key != *gateway_public {
            return Err(PeerCacheError::Foreign {
                path: self.path.clone(),
                found: body.gateway_public_key,
            });
        }
        Ok(Some((body.written_at, body.devices)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn device(n: u8) -> CachedDevice {
        CachedDevice {
            id: i64::from(n),
            username: format!("user{n}"),
            public_key: PublicKey::from_bytes([n; 32]).unwrap(),
            address: Ipv4Addr::new(100, 64, 0, n),
            groups: vec!["cn=g,dc=test".into()],
            endpoint: Some(SocketAddr::from(([198, 18, 0, n], 40000))),
            mfa_until_ms: None,
            key_expires_at: Some(1_800_000_000_000 + i64::from(n)),
        }
    }

    #[test]
    fn round_trip_then_every_modification_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let cache = PeerCache::open(dir.path()).unwrap();
        let gw = PublicKey::from_bytes([7; 32]).unwrap();
        assert!(cache.load(&gw).unwrap().is_none());
        cache.save(&gw, 1234, vec![device(2), device(3)]).unwrap();
        let (at, devs) = cache.load(&gw).unwrap().unwrap();
        assert_eq!((at, devs), (1234, vec![device(2), device(3)]));
        for f in [KEY_FILE, CACHE_FILE] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // The same key reopened: still valid.
        assert!(PeerCache::open(dir.path())
            .unwrap()
            .load(&gw)
            .unwrap()
            .is_some());

        // Another gateway's public key: foreign.
        assert!(matches!(
            cache.load(&PublicKey::from_bytes([8; 32]).unwrap()),
            Err(PeerCacheError::Foreign { .. })
        ));
        // One address changed in the body: tampered.
        let text = std::fs::read_to_string(cache.path()).unwrap();
        std::fs::write(cache.path(), text.replace("100.64.0.3", "100.64.0.9")).unwrap();
        let e = cache.load(&gw).unwrap_err();
        assert!(matches!(e, PeerCacheError::Tampered { .. }), "{e}");
        assert!(e.to_string().contains("refused"));
        // A valid file written with another key (another gateway's state directory).
        let other = tempfile::tempdir().unwrap();
        let foreign = PeerCache::open(other.path()).unwrap();
        foreign.save(&gw, 1, vec![device(4)]).unwrap();
        std::fs::copy(foreign.path(), cache.path()).unwrap();
        assert!(matches!(
            cache.load(&gw),
            Err(PeerCacheError::Tampered { .. })
        ));
        // Garbage.
        std::fs::write(cache.path(), b"not a cache").unwrap();
        assert!(matches!(
            cache.load(&gw),
            Err(PeerCacheError::Tampered { .. })
        ));
    }

    #[test]
    fn a_bad_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "short\n").unwrap();
        let e = PeerCache::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains(KEY_FILE), "{e}");
    }

    #[test]
    fn a_cache_older_than_the_limit_is_refused_saying_what_to_do() {
        let path = Path::new("/var/lib/sesame/peer-cache.json");
        let day = 86_400_000;
        let week = Duration::from_secs(7 * 86_400);
        let now = 1_800_000_000_000;
        assert!(check_age(path, now - 7 * day, now, week).is_ok());
        assert!(
            check_age(path, now + day, now, week).is_ok(),
            "clock set back"
        );
        let e = check_age(path, now - 8 * day, now, week).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, PeerCacheError::TooOld { .. }), "{e}");
        for part in [
            "8days",
            "7days",
            "max_cache_age",
            "refusé",
            "refused",
            "peer-cache.json",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(
            text.find("refusé") < text.find("refused"),
            "French first: {text}"
        );
    }

    #[test]
    fn a_cache_written_before_expiries_were_kept_is_read_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PeerCache::open(dir.path()).unwrap();
        let gw = PublicKey::from_bytes([7; 32]).unwrap();
        let mut old = device(2);
        old.key_expires_at = None;
        cache.save(&gw, 1234, vec![old.clone()]).unwrap();
        let text = std::fs::read_to_string(cache.path()).unwrap();
        assert!(!text.contains("key_expires_at"), "the old format: {text}");
        let (_, devs) = cache.load(&gw).unwrap().unwrap();
        assert_eq!(devs, vec![old]);
        assert_eq!(devs[0].active().key_expires_at, None);
        // The new format keeps the expiry through the control plane's type.
        cache.save(&gw, 1234, vec![device(3)]).unwrap();
        let (_, devs) = cache.load(&gw).unwrap().unwrap();
        assert_eq!(devs[0].active().key_expires_at, Some(1_800_000_000_003));
        assert_eq!(
            CachedDevice::new(&devs[0].active(), None).key_expires_at,
            Some(1_800_000_000_003)
        );
    }
}
