//! `LdapDirectory`: authentication and group resolution against OpenLDAP or Active Directory.
//!
//! Authentication is search-then-bind: the service account finds exactly one entry with the
//! escaped login, then the password is checked by binding as that entry's DN on a separate
//! connection. Groups are read with the service account (OpenLDAP: memberOf plus a member /
//! uniqueMember search iterated to a fixed point; AD: the in-chain matching rule); a login
//! reuses the groups resolved for the same entry and `memberOf` within a minute (`cache`), a
//! lookup always reads them.

use std::time::{Duration, Instant};

use ldap3::{Scope, SearchEntry};

use super::cache::{self, GroupCache};
use super::conn::{self, Pool, RC_NO_SUCH_OBJECT, RC_SIZE_LIMIT, RC_SUCCESS};
use super::filter::{ad_nested_groups_filter, member_filter, user_filter, validate_username};
use super::nesting::{dn_key, Walk};
use super::{DirFuture, Directory, DirectoryError, DirectoryUser, Unavailable};
use crate::config::{DirectoryConfig, DirectoryKind};

/// DNs per member/uniqueMember search, to keep filters a sane size.
const MEMBER_BATCH: usize = 50;
/// AD userAccountControl ACCOUNTDISABLE.
const UAC_ACCOUNTDISABLE: i64 = 0x2;
/// ppolicy's lock attribute. Only the value `000001010000Z` is an administrator's permanent
/// lock, i.e. a disabled account; any other value is the time of a lockout after failed
/// binds, which slapd enforces on binds but which must not revoke the person's devices.
const LOCKED_ATTR: &str = "pwdAccountLockedTime";
const LOCKED_PERMANENTLY: &str = "000001010000Z";

#[path = "bulk.rs"]
mod bulk;

pub struct LdapDirectory {
    kind: DirectoryKind,
    url: String,
    user_base: String,
    user_filter: String,
    group_base: String,
    timeout: Duration,
    service: Pool,
    binds: Pool,
    /// Nested groups resolved recently, reused by logins (see `cache`).
    groups: GroupCache,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("user_base", &self.user_base)
            .finish_non_exhaustive()
    }
}

/// Reads the service password: the file's content without its trailing newline.
pub fn read_bind_password(path: &std::path::Path) -> Result<String, DirectoryError> {
    let raw = std::fs::read_to_string(path).map_err(|source| Unavailable::PasswordFile {
        path: path.to_path_buf(),
        source,
    })?;
    let password = raw.trim_end_matches(['\n', '\r']).to_string();
    if password.trim().is_empty() {
        return Err(Unavailable::EmptyPasswordFile {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(password)
}

impl LdapDirectory {
    /// Reads the service password and prepares TLS and the pools; connects lazily (on first
    /// use), so a directory that is down at start-up does not stop Sesame from starting.
    pub fn new(cfg: &DirectoryConfig) -> Result<Self, DirectoryError> {
        let password = read_bind_password(&cfg.bind_password_file)?;
        let sample = user_filter(&cfg.user_filter, "sample");
        if ldap3::parse_filter(&sample).is_err() {
            return Err(Unavailable::UserFilter {
                filter: cfg.user_filter.clone(),
                sample,
            }
            .into());
        }
        let settings = conn::conn_settings(cfg)?;
        if cfg.url.starts_with("ldap://") && !cfg.starttls {
            if cfg.insecure_plaintext {
                tracing::warn!(url = %cfg.url, "directory passwords travel in clear text (insecure_plaintext = true)");
            } else {
                tracing::info!(url = %cfg.url, "plain ldap:// to a loopback directory");
            }
            if cfg.ca_file.is_some() {
                tracing::warn!(url = %cfg.url, "ca_file is unused: ldap:// without starttls = true does no TLS");
            }
        }
        Ok(LdapDirectory {
            kind: cfg.kind,
            url: cfg.url.clone(),
            user_base: cfg.user_base.clone(),
            user_filter: cfg.user_filter.clone(),
            group_base: cfg.group_base.clone(),
            timeout: cfg.timeout,
            service: Pool::new(
                &cfg.url,
                settings.clone(),
                Some((cfg.bind_dn.clone(), password)),
                cfg.timeout,
            ),
            binds: Pool::new(&cfg.url, settings, None, cfg.timeout),
            groups: GroupCache::new(cfg.sync_interval.min(cache::MAX_TTL)),
        })
    }

    /// The directory answers and the service bind works (for readiness probes).
    async fn ping_inner(&self) -> Result<(), DirectoryError> {
        self.deadline(async {
            let (_, rc) = self
                .service
                .search(&self.user_base, Scope::Base, "(objectClass=*)", &["1.1"], 1)
                .await?;
            self.check_base_rc(rc, "user_base", &self.user_base)
        })
        .await
    }

    async fn deadline<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, DirectoryError>>,
    ) -> Result<T, DirectoryError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(Unavailable::Timeout {
                    url: self.url.clone(),
                    timeout: self.timeout,
                }
                .into())
            })
    }

    fn check_base_rc(&self, rc: u32, key: &'static str, base: &str) -> Result<(), DirectoryError> {
        let (url, base) = (self.url.clone(), base.to_string());
        match rc {
            RC_SUCCESS | RC_SIZE_LIMIT => Ok(()),
            RC_NO_SUCH_OBJECT => Err(Unavailable::MissingBase { url, key, base }.into()),
            rc => Err(Unavailable::Search { url, base, rc }.into()),
        }
    }

    /// The attribute holding the login (what `describe_entry` takes as the username).
    fn login_attr(&self) -> &'static str {
        login_attr(self.kind)
    }

    fn user_attrs(&self) -> &'static [&'static str] {
        match self.kind {
            DirectoryKind::OpenLdap => &["uid", "cn", "displayName", "memberOf", LOCKED_ATTR],
            DirectoryKind::ActiveDirectory => &[
                "sAMAccountName",
                "cn",
                "displayName",
                "userAccountControl",
                "memberOf",
            ],
        }
    }

    /// The one entry matching the login; `None` if there are none or several.
    async fn find_user(&self, username: &str) -> Result<Option<SearchEntry>, DirectoryError> {
        let filter = user_filter(&self.user_filter, username);
        let (mut entries, rc) = self
            .service
            .search(
                &self.user_base,
                Scope::Subtree,
                &filter,
                self.user_attrs(),
                2,
            )
            .await?;
        self.check_base_rc(rc, "user_base", &self.user_base)?;
        if entries.len() > 1 || rc == RC_SIZE_LIMIT {
            tracing::warn!(filter = %filter, "user filter matches several entries: login refused");
            return Ok(None);
        }
        Ok(entries.pop())
    }

    /// The user of `entry` with their groups: resolved in the directory, or (`reuse`: a login)
    /// taken from the cache when resolved recently for the same `memberOf` (see `cache`).
    async fn user_from_entry(
        &self,
        entry: SearchEntry,
        typed: &str,
        reuse: bool,
    ) -> Result<DirectoryUser, DirectoryError> {
        let mut user = describe_entry(self.kind, &entry, typed);
        let key = dn_key(&entry.dn);
        let direct = attr_values(&entry, "memberOf");
        let member_of = member_of_key(&direct);
        if reuse {
            if let Some(groups) = self.groups.get(&key, &member_of) {
                user.groups = groups;
                return Ok(user);
            }
        }
        let started = Instant::now();
        user.groups = match self.kind {
            DirectoryKind::OpenLdap => self.openldap_groups(&entry.dn, direct).await?,
            DirectoryKind::ActiveDirectory => self.ad_groups(&entry.dn).await?,
        };
        self.groups
            .put(key, member_of, user.groups.clone(), started);
        Ok(user)
    }

    /// memberOf (if the overlay is there) plus every group listing the user, or a group already
    /// found, as member/uniqueMember; one search per level until no new group appears (`Walk`).
    async fn openldap_groups(
        &self,
        user_dn: &str,
        member_of: Vec<String>,
    ) -> Result<Vec<String>, DirectoryError> {
        let mut walk = Walk::new(user_dn, member_of);
        while let Some(level) = walk.next_level() {
            for chunk in level.chunks(MEMBER_BATCH) {
                let (entries, rc) = self
                    .service
                    .search(
                        &self.group_base,
                        Scope::Subtree,
                        &member_filter(chunk),
                        &["1.1"],
                        0,
                    )
                    .await?;
                self.check_base_rc(rc, "group_base", &self.group_base)?;
                for e in entries {
                    walk.found(&e.dn);
                }
            }
        }
        Ok(walk.finish())
    }

    async fn ad_groups(&self, user_dn: &str) -> Result<Vec<String>, DirectoryError> {
        let (entries, rc) = self
            .service
            .search(
                &self.group_base,
                Scope::Subtree,
                &ad_nested_groups_filter(user_dn),
                &["1.1"],
                0,
            )
            .await?;
        self.check_base_rc(rc, "group_base", &self.group_base)?;
        let mut groups: Vec<String> = entries.into_iter().map(|e| e.dn).collect();
        groups.sort_by_key(|g| dn_key(g));
        groups.dedup_by_key(|g| dn_key(g));
        Ok(groups)
    }

    async fn authenticate_inner(
        &self,
        username: &str,
        password: &str,
    ) -> Result<DirectoryUser, DirectoryError> {
        let Some(entry) = self.find_user(username).await? else {
            // Spend the bind round trip a real user would cost, so that response time does not
            // tell an unknown login from a wrong password. The DN cannot exist: it is not under
            // any RDN the seed or a directory uses, and its result is ignored.
            let decoy = format!("cn=sesame-unknown-user,{}", self.user_base);
            let _ = self.binds.check_password(&decoy, password).await;
            return Err(DirectoryError::InvalidCredentials);
        };
        let user = describe_entry(self.kind, &entry, username);
        // The bind comes first, whatever the account's state: a disabled account costs the same
        // round trip as a wrong password, so response time does not tell them apart (the
        // service answers both alike; `Disabled` is for its audit reason).
        let password_ok = self.binds.check_password(&entry.dn, password).await?;
        if user.disabled {
            return Err(DirectoryError::Disabled);
        }
        if !password_ok {
            return Err(DirectoryError::InvalidCredentials);
        }
        self.user_from_entry(entry, username, true).await
    }

    async fn lookup_inner(&self, username: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        match self.find_user(username).await? {
            Some(entry) => Ok(Some(self.user_from_entry(entry, username, false).await?)),
            None => Ok(None),
        }
    }
}

impl Directory for LdapDirectory {
    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a str,
    ) -> DirFuture<'a, DirectoryUser> {
        Box::pin(async move {
            // Before any network traffic: an empty password would be an unauthenticated bind,
            // which LDAP servers accept.
            if password.trim().is_empty() {
                return Err(DirectoryError::EmptyPassword);
            }
            validate_username(username)?;
            self.deadline(self.authenticate_inner(username, password))
                .await
        })
    }

    fn lookup<'a>(&'a self, username: &'a str) -> DirFuture<'a, Option<DirectoryUser>> {
        Box::pin(async move {
            if validate_username(username).is_err() {
                return Ok(None);
            }
            self.deadline(self.lookup_inner(username)).await
        })
    }

    fn lookup_many<'a>(
        &'a self,
        usernames: &'a [String],
        in_flight: usize,
    ) -> DirFuture<'a, Vec<Option<DirectoryUser>>> {
        Box::pin(self.lookup_many_inner(usernames, in_flight))
    }

    fn ping(&self) -> DirFuture<'_, ()> {
        Box::pin(self.ping_inner())
    }
}

/// The entry's `memberOf` in canonical form, sorted: what the login cache compares.
fn member_of_key(direct: &[String]) -> Vec<String> {
    let mut member_of: Vec<String> = direct.iter().map(|g| dn_key(g)).collect();
    member_of.sort();
    member_of.dedup();
    member_of
}

fn login_attr(kind: DirectoryKind) -> &'static str {
    match kind {
        DirectoryKind::OpenLdap => "uid",
        DirectoryKind::ActiveDirectory => "sAMAccountName",
    }
}

/// Values of an attribute, whatever case the server used for its name.
fn attr_values(entry: &SearchEntry, name: &str) -> Vec<String> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn first_value(entry: &SearchEntry, name: &str) -> Option<String> {
    attr_values(entry, name).into_iter().next()
}

/// Name, display name and disabled flag of a user entry (groups are filled in later).
pub(crate) fn describe_entry(
    kind: DirectoryKind,
    entry: &SearchEntry,
    typed: &str,
) -> DirectoryUser {
    let disabled = match kind {
        DirectoryKind::OpenLdap => attr_values(entry, LOCKED_ATTR)
            .iter()
            .any(|v| v.trim().eq_ignore_ascii_case(LOCKED_PERMANENTLY)),
        DirectoryKind::ActiveDirectory => first_value(entry, "userAccountControl")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .is_some_and(|uac| uac & UAC_ACCOUNTDISABLE != 0),
    };
    let username = first_value(entry, login_attr(kind)).unwrap_or_else(|| typed.to_string());
    let display_name = first_value(entry, "displayName")
        .or_else(|| first_value(entry, "cn"))
        .unwrap_or_else(|| username.clone());
    DirectoryUser {
        username,
        dn: entry.dn.clone(),
        display_name,
        groups: Vec::new(),
        disabled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect::<HashMap<_, _>>(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn ad_account_disable_bit() {
        let dn = "CN=Dupont\\, Marie,OU=Paie,DC=ac,DC=fr";
        let enabled = entry(
            dn,
            &[
                ("sAMAccountName", &["mdupont"]),
                ("userAccountControl", &["512"]),
            ],
        );
        let disabled = entry(
            dn,
            &[
                ("sAMAccountName", &["mdupont"]),
                ("userAccountControl", &["514"]),
            ],
        );
        let u = describe_entry(DirectoryKind::ActiveDirectory, &enabled, "MDUPONT");
        assert_eq!(u.username, "mdupont");
        assert_eq!(u.display_name, "mdupont", "no displayName/cn: the login");
        assert!(!u.disabled);
        assert!(describe_entry(DirectoryKind::ActiveDirectory, &disabled, "mdupont").disabled);
        // 66050 = NORMAL_ACCOUNT | ACCOUNTDISABLE | DONT_EXPIRE_PASSWORD
        let e = entry(dn, &[("userAccountControl", &["66050"])]);
        assert!(describe_entry(DirectoryKind::ActiveDirectory, &e, "x").disabled);
        let e = entry(dn, &[("userAccountControl", &["66048"])]);
        assert!(!describe_entry(DirectoryKind::ActiveDirectory, &e, "x").disabled);
    }

    #[test]
    fn openldap_locked_and_names() {
        let e = entry(
            "cn=Lefèvre\\, Hélène,ou=people,dc=academie,dc=test",
            &[
                ("uid", &["hlefevre"]),
                ("cn", &["Lefèvre, Hélène"]),
                ("pwdaccountlockedtime", &["000001010000Z"]),
            ],
        );
        let u = describe_entry(DirectoryKind::OpenLdap, &e, "HLefevre");
        assert_eq!(u.username, "hlefevre");
        assert_eq!(u.display_name, "Lefèvre, Hélène");
        assert!(u.disabled, "attribute names are matched case-insensitively");
        let failures_lockout = entry(
            "uid=x,dc=t",
            &[("pwdAccountLockedTime", &["20240101000000Z"])],
        );
        assert!(!describe_entry(DirectoryKind::OpenLdap, &failures_lockout, "x").disabled);
        let e = entry(
            "uid=x,dc=t",
            &[("displayName", &["Xavier"]), ("cn", &["X"])],
        );
        let u = describe_entry(DirectoryKind::OpenLdap, &e, "x");
        assert_eq!(
            (u.username.as_str(), u.display_name.as_str(), u.disabled),
            ("x", "Xavier", false)
        );
    }

    #[test]
    fn bind_password_file_is_trimmed_and_required() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret with space \n").expect("write");
        assert_eq!(read_bind_password(&p).expect("read"), "s3cret with space ");
        std::fs::write(&p, "\n").expect("write");
        assert!(matches!(
            read_bind_password(&p),
            Err(DirectoryError::Unavailable(why)) if matches!(*why, Unavailable::EmptyPasswordFile { .. })
        ));
        let missing = dir.path().join("missing.password");
        match read_bind_password(&missing) {
            Err(DirectoryError::Unavailable(m)) => {
                assert!(m.to_string().contains("missing.password"), "{m}");
                // The I/O error is kept as the source, not flattened into the text.
                let source = std::error::Error::source(&m).expect("source");
                let io = source.downcast_ref::<std::io::Error>().expect("io::Error");
                assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
