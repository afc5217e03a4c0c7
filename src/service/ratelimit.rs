//! Brute-force protection of logins and enrolments: failures counted per account, per source
//! (IPv4 address, IPv6 /64) and per (account, source) pair, in bounded memory or (several
//! portals) on counts the database keeps; the rules are here either way.
//!
//! - 5 failures within a minute on any key: 429 for the rest of that minute.
//! - 100 failures within an hour on one account: the account is refused for 15 minutes from
//!   every source, except from a browser or agent that logged in successfully before and shows
//!   the signed device token it was given then (the OWASP "device cookie"): a stranger cannot
//!   lock the owner out.
//! - Accounts are keyed by their canonical spelling ([`account_key`]: trimmed, lower-cased,
//!   `DOMAIN\` and `@realm` removed, truncated), so spellings of one account share a bucket and
//!   a 16 KiB username costs no more than a short one.
//! - Each table is capped and kept in last-touched order (hashlink's `LinkedHashMap`):
//!   expiry pops stale entries from the front, a full table evicts its oldest entry, both O(1)
//!   per entry under one short lock; nothing scans the table on a request.
//!
//! - With PostgreSQL (several portals on one database), the same rules run on counts kept in
//!   the database (`login_failures`, see [`FailureLimiter::judge_shared`] and
//!   `service::limits`): every portal sees every portal's failures. With SQLite (`sesame serve`,
//!   one process), they stay in the tables above.
//!
//! This is the portal's own lockout, checked before any bind reaches the directory; the
//! directory's lockout policy (ppolicy, AD lockout threshold) stays the last line: see
//! docs/lockout.md for how to set both.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

use crate::store::{FailureCount, FailureWindows};
use crate::time::duration_ms;

/// Failures allowed within [`WINDOW`] on one key; the next attempt is refused.
pub const MAX_FAILURES: u32 = 5;
/// The short window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Failures on one account within [`LONG_WINDOW`] that lock it for [`LOCKOUT`].
pub const ACCOUNT_HOURLY_FAILURES: u32 = 100;
pub const LONG_WINDOW: Duration = Duration::from_secs(3600);
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Longest account name kept as a key (bytes, cut on a character boundary).
pub const MAX_ACCOUNT_KEY: usize = 64;
/// Entries per table (accounts, sources, pairs): at most a few MiB in all.
pub const MAX_ENTRIES: usize = 50_000;
/// How long a device token from a successful login bypasses the account lock.
pub const DEVICE_TOKEN_LIFETIME: Duration = Duration::from_secs(180 * 86_400);

type HmacSha256 = Hmac<Sha256>;

/// Unix seconds now (device tokens carry their issue time in seconds).
fn unix_secs() -> u64 {
    u64::try_from(crate::time::now_ms() / 1000).unwrap_or(0)
}

/// The canonical account a typed username counts against.
pub fn account_key(username: &str) -> String {
    let mut s = username.trim();
    if let Some((_, user)) = s.rsplit_once('\\') {
        s = user;
    }
    if let Some((user, _)) = s.split_once('@') {
        s = user;
    }
    let end = crate::text::floor_char_boundary(s, MAX_ACCOUNT_KEY * 4);
    let mut key = s[..end].trim().to_lowercase();
    crate::text::truncate_to(&mut key, MAX_ACCOUNT_KEY);
    key
}

/// The source a client address counts against: IPv4 as is, IPv6 per /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// Start of the current short window and failures in it.
    short_start: Instant,
    short: u32,
    /// Start of the current long window and failures in it (accounts only).
    long_start: Instant,
    long: u32,
    locked_until: Option<Instant>,
    touched: Instant,
}

impl Counter {
    fn new(now: Instant) -> Counter {
        Counter {
            short_start: now,
            short: 0,
            long_start: now,
            long: 0,
            locked_until: None,
            touched: now,
        }
    }

    fn roll(&mut self, now: Instant, window: Duration) {
        if now.saturating_duration_since(self.short_start) >= window {
            self.short_start = now;
            self.short = 0;
        }
        if now.saturating_duration_since(self.long_start) >= LONG_WINDOW {
            self.long_start = now;
            self.long = 0;
        }
        if self.locked_until.is_some_and(|t| now >= t) {
            self.locked_until = None;
        }
    }

    /// How long to wait, if this key is over its short limit.
    fn short_wait(&self, now: Instant, max: u32, window: Duration) -> Option<Duration> {
        (self.short >= max)
            .then(|| window.saturating_sub(now.saturating_duration_since(self.short_start)))
    }
}

/// One capped table in last-touched order.
#[derive(Debug)]
struct Table<K: std::hash::Hash + Eq> {
    map: hashlink::LinkedHashMap<K, Counter>,
}

impl<K: std::hash::Hash + Eq> Table<K> {
    fn new() -> Self {
        Table {
            map: hashlink::LinkedHashMap::new(),
        }
    }

    /// Drops entries untouched for longer than anything they could still enforce.
    fn expire(&mut self, now: Instant) {
        while let Some((_, c)) = self.map.front() {
            let live = now.saturating_duration_since(c.touched) < LONG_WINDOW
                || c.locked_until.is_some_and(|t| now < t);
            if live {
                break;
            }
            self.map.pop_front();
        }
    }

    fn get(&mut self, k: &K, now: Instant, window: Duration) -> Option<Counter> {
        let c = self.map.get_mut(k)?;
        c.roll(now, window);
        Some(*c)
    }

    fn touch(&mut self, k: K, now: Instant, window: Duration) -> &mut Counter {
        self.expire(now);
        if !self.map.contains_key(&k) && self.map.len() >= MAX_ENTRIES {
            self.map.pop_front();
        }
        let c = self.map.entry(k).or_insert_with(|| Counter::new(now));
        c.roll(now, window);
        c.touched = now;
        // Keep last-touched order (the entry API does not move existing entries).
        c
    }

    fn refresh_order(&mut self, k: &K) {
        self.map.to_back(k);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

#[derive(Debug)]
struct Tables {
    accounts: Table<String>,
    sources: Table<IpAddr>,
    pairs: Table<(String, IpAddr)>,
}

/// Failure counters and the device-token key.
#[derive(Debug)]
pub struct FailureLimiter {
    tables: Mutex<Tables>,
    max_failures: u32,
    window: Duration,
    /// Signs device tokens: derived from the portal key ([`Self::with_device_key`]), so every
    /// portal sharing `[portal] secret_key_file` honours the others' tokens and a restart
    /// keeps them; random per process without it (tests, tools).
    device_key: [u8; 32],
    /// When this process last pruned the shared counts (PostgreSQL).
    last_prune: Mutex<Option<Instant>>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        Self::with_limits(MAX_FAILURES as usize, WINDOW)
    }
}

/// Why an attempt is refused now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub retry_after: Duration,
    /// The account is locked (100 failures within an hour), not just over the minute limit.
    pub account_locked: bool,
    /// Which counters refused (`user:<account>`, `ip:<source>`, `pair:<account>@<source>`), as
    /// audited in `auth.rate_limited`.
    pub keys: Vec<String>,
}

impl FailureLimiter {
    /// The production limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Other short-window limits (tests that send many bad inputs from one address).
    pub fn with_limits(max_failures: usize, window: Duration) -> Self {
        let mut device_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut device_key);
        FailureLimiter {
            tables: Mutex::new(Tables {
                accounts: Table::new(),
                sources: Table::new(),
                pairs: Table::new(),
            }),
            max_failures: u32::try_from(max_failures.max(1)).unwrap_or(u32::MAX),
            window,
            device_key,
            last_prune: Mutex::new(None),
        }
    }

    /// The same limiter signing device tokens with `key`.
    pub fn with_device_key(mut self, key: [u8; 32]) -> Self {
        self.device_key = key;
        self
    }

    /// `Err` when this attempt must be refused (429).
    pub fn check(&self, username: &str, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        self.check_device(username, ip, None, now)
    }

    /// As [`Self::check`], with the device token the client holds from an earlier successful
    /// login: a valid one for this account skips the account's own limits.
    pub fn check_device(
        &self,
        username: &str,
        ip: IpAddr,
        device_token: Option<&str>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let account = account_key(username);
        let source = source_key(ip);
        let known_device = device_token.is_some_and(|t| self.device_token_valid(t, &account));
        let mut t = self.tables.lock();
        let mut wait = Duration::ZERO;
        let mut locked = false;
        let mut keys = Vec::new();
        let (max, window) = (self.max_failures, self.window);
        let mut over = |w: Option<Duration>, key: String, keys: &mut Vec<String>| {
            if let Some(w) = w.filter(|w| !w.is_zero()) {
                wait = wait.max(w);
                keys.push(key);
            }
        };
        if let Some(c) = t.sources.get(&source, now, window) {
            over(
                c.short_wait(now, max, window),
                format!("ip:{source}"),
                &mut keys,
            );
        }
        if let Some(c) = t.pairs.get(&(account.clone(), source), now, window) {
            over(
                c.short_wait(now, max, window),
                format!("pair:{account}@{source}"),
                &mut keys,
            );
        }
        if !known_device {
            if let Some(c) = t.accounts.get(&account, now, window) {
                let lock = c
                    .locked_until
                    .map(|until| until.saturating_duration_since(now));
                locked = lock.is_some_and(|w| !w.is_zero());
                let w = c.short_wait(now, max, window).max(lock);
                over(w, format!("user:{account}"), &mut keys);
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(Refusal {
                retry_after: wait.max(Duration::from_secs(1)),
                account_locked: locked,
                keys,
            })
        }
    }

    /// Records one failed attempt on the account, the source and the pair.
    pub fn record_failure(&self, username: &str, ip: IpAddr, now: Instant) {
        let account = account_key(username);
        let source = source_key(ip);
        let window = self.window;
        let mut t = self.tables.lock();
        t.sources.touch(source, now, window).short += 1;
        t.sources.refresh_order(&source);
        let pair = (account.clone(), source);
        t.pairs.touch(pair.clone(), now, window).short += 1;
        t.pairs.refresh_order(&pair);
        let c = t.accounts.touch(account.clone(), now, window);
        c.short += 1;
        c.long += 1;
        if c.long >= ACCOUNT_HOURLY_FAILURES && c.locked_until.is_none() {
            c.locked_until = Some(now + LOCKOUT);
        }
        t.accounts.refresh_order(&account);
    }

    /// A success forgets the account's short-window failures (the hourly count and a lock
    /// stay: they guard the account against others).
    pub fn record_success(&self, username: &str) {
        let account = account_key(username);
        let mut t = self.tables.lock();
        if let Some(c) = t.accounts.map.get_mut(&account) {
            c.short = 0;
        }
    }

    /// Entries held now (accounts + sources + pairs), for tests and metrics.
    pub fn entries(&self) -> usize {
        let t = self.tables.lock();
        t.accounts.len() + t.sources.len() + t.pairs.len()
    }

    /// A device token for `username`, given after a successful login (cookie or agent).
    pub fn issue_device_token(&self, username: &str) -> String {
        let account = account_key(username);
        let issued = unix_secs();
        let mut body = issued.to_be_bytes().to_vec();
        body.extend_from_slice(&self.tag(&account, issued));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    }

    fn mac(&self, account: &str, issued: u64) -> HmacSha256 {
        let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(&self.device_key) else {
            unreachable!("HMAC takes any key length")
        };
        mac.update(account.as_bytes());
        mac.update(&issued.to_be_bytes());
        mac
    }

    fn tag(&self, account: &str, issued: u64) -> [u8; 16] {
        let full = self.mac(account, issued).finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// Whether `token` is the device token of an earlier success of `username` (a known
    /// browser or agent).
    pub fn is_known_device(&self, username: &str, token: Option<&str>) -> bool {
        token.is_some_and(|t| self.device_token_valid(t, &account_key(username)))
    }

    /// Whether `token` was issued by this limiter for `account`, and is not too old.
    fn device_token_valid(&self, token: &str, account: &str) -> bool {
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        let Ok(raw) = <[u8; 24]>::try_from(raw.as_slice()) else {
            return false;
        };
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&raw[..8]);
        let issued = u64::from_be_bytes(issued);
        let now = unix_secs();
        if now.saturating_sub(issued) > DEVICE_TOKEN_LIFETIME.as_secs() {
            return false;
        }
        // Constant-time comparison of the truncated tag.
        self.mac(account, issued)
            .verify_truncated_left(&raw[8..])
            .is_ok()
    }
}

/// The shared counters of one attempt (`login_failures` keys, spelt as in [`Refusal::keys`]),
/// in the one order every portal writes them: source, pair, account (so concurrent counts
/// never deadlock).
pub fn shared_keys(username: &str, ip: IpAddr) -> [String; 3] {
    let account = account_key(username);
    let source = source_key(ip);
    [
        format!("ip:{source}"),
        format!("pair:{account}@{source}"),
        shared_account_key(username),
    ]
}

/// The account's own shared counter (the last of [`shared_keys`]).
pub fn shared_account_key(username: &str) -> String {
    format!("user:{}", account_key(username))
}

/// What a check of the shared counts found: the account has failures in its short window (a
/// success then forgets them, the only write a success may cost).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admitted {
    pub account_failures: bool,
}

impl FailureLimiter {
    /// The windows the shared counts are kept in.
    pub fn windows(&self) -> FailureWindows {
        FailureWindows {
            short_ms: duration_ms(self.window),
            long_ms: duration_ms(LONG_WINDOW),
        }
    }

    /// Until when each of [`shared_keys`] may still refuse anything after a failure now: the
    /// source and the pair for the short window, the account for the long one.
    pub fn kept_until(&self, now_ms: i64) -> [i64; 3] {
        let short = now_ms.saturating_add(duration_ms(self.window));
        [
            short,
            short,
            now_ms.saturating_add(duration_ms(LONG_WINDOW)),
        ]
    }

    /// The same verdict as [`Self::check_device`], on the shared counts of [`shared_keys`]
    /// (`counts`: those that exist) at `now_ms`.
    pub fn judge_shared(
        &self,
        keys: &[String; 3],
        counts: &[FailureCount],
        known_device: bool,
        now_ms: i64,
    ) -> Result<Admitted, Refusal> {
        let window = duration_ms(self.window);
        let max = i64::from(self.max_failures);
        let mut wait = 0_i64;
        let mut locked = false;
        let mut refused = Vec::new();
        let mut admitted = Admitted::default();
        for (i, key) in keys.iter().enumerate() {
            let is_account = i == 2;
            if is_account && known_device {
                continue;
            }
            let Some(c) = counts.iter().find(|c| &c.key == key) else {
                continue;
            };
            let elapsed = now_ms.saturating_sub(c.short_start);
            let short = if elapsed >= window { 0 } else { c.short_count };
            let mut w = if short >= max { window - elapsed } else { 0 };
            if is_account {
                admitted.account_failures = short > 0;
                let lock = c.locked_until.map_or(0, |t| t.saturating_sub(now_ms));
                locked = lock > 0;
                w = w.max(lock);
            }
            if w > 0 {
                wait = wait.max(w);
                refused.push(key.clone());
            }
        }
        if wait == 0 {
            return Ok(admitted);
        }
        let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
        Err(Refusal {
            retry_after: wait.max(Duration::from_secs(1)),
            account_locked: locked,
            keys: refused,
        })
    }

    /// Until when to lock the account whose counts are `account` after a failure now: when its
    /// long window reached [`ACCOUNT_HOURLY_FAILURES`] and no lock is on.
    pub fn lock_due(&self, account: &FailureCount, now_ms: i64) -> Option<i64> {
        let unlocked = account.locked_until.is_none_or(|t| t <= now_ms);
        (account.long_count >= i64::from(ACCOUNT_HOURLY_FAILURES) && unlocked)
            .then(|| now_ms.saturating_add(duration_ms(LOCKOUT)))
    }

    /// Whether this process should prune the expired shared counts now (at most once a
    /// [`WINDOW`]; the next failure counted after it does).
    pub fn prune_due(&self, now: Instant) -> bool {
        let mut last = self.last_prune.lock();
        if last.is_some_and(|t| now.saturating_duration_since(t) < WINDOW) {
            return false;
        }
        *last = Some(now);
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "ratelimit_tests.rs"]
mod tests;
