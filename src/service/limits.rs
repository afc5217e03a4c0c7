//! Where the failure limiter's counts live: in this process's memory with SQLite (`sesame serve`
//! is the only process), in PostgreSQL's `login_failures` otherwise, shared by every portal on
//! the database. The rules are `service::ratelimit`'s either way.
//!
//! With PostgreSQL, a check is one primary-key read of the attempt's three keys (shared with
//! the attempts that ask at the same time: `service::count_reads`); a failure is
//! one upsert of them (plus, on the 100th failure of an hour, the account's lock, and once a
//! minute per process a delete of the expired rows); a success writes only when the account
//! had failures to forget. A database that does not answer fails the check like the rest of the
//! login (503); a failure that cannot be counted is logged (the next check fails the same way).
//!
//! The spray ceiling (`service::spray`) lives beside them: in memory, or as one more key read
//! with the attempt's three (no extra round trip) and counted by one more upsert per failure.

use std::net::IpAddr;
use std::time::Instant;

use crate::store::{Backend, Store, StoreError};

use super::count_reads::CountReads;
use super::ratelimit::{shared_account_key, shared_keys, Admitted, FailureLimiter, Refusal};
use super::spray::{self, SprayCeiling};
use super::{ServiceError, Services};

/// The limiter with the store its counts live in (`None`: in memory).
pub(super) struct Limits<'a> {
    limiter: &'a FailureLimiter,
    spray: &'a SprayCeiling,
    reads: &'a CountReads,
    /// `[portal] spray_ceiling` (0: none).
    ceiling: u32,
    shared: Option<&'a Store>,
}

/// What the limits say of a password attempt ([`Limits::check_attempt`]).
#[derive(Debug)]
pub(super) enum Verdict {
    Admitted(Admitted),
    /// Past a limit of its account, source or pair.
    Limited(Refusal),
    /// A password spray is on and the attempt shows no known device.
    Spray,
}

impl Services {
    /// The failure limits, on the counts this backend keeps them in.
    pub(super) fn limits(&self) -> Limits<'_> {
        let store = self.store();
        Limits {
            limiter: self.limiter(),
            spray: self.spray(),
            reads: self.count_reads(),
            ceiling: self.config().portal.spray_ceiling,
            shared: (store.backend() == Backend::Postgres).then_some(store),
        }
    }
}

impl Limits<'_> {
    /// `Ok(Err(_))` when this attempt must be refused (429); a valid `device_token` of this
    /// account skips the account's own limits. The spray ceiling is not asked (codes).
    pub async fn check(
        &self,
        username: &str,
        ip: IpAddr,
        device_token: Option<&str>,
    ) -> Result<Result<Admitted, Refusal>, ServiceError> {
        Ok(self.judge(username, ip, device_token, false).await?.1)
    }

    /// [`Self::check`] for a password attempt, the spray ceiling first: during a spray only
    /// a known device (`device_token`) may try.
    pub async fn check_attempt(
        &self,
        username: &str,
        ip: IpAddr,
        device_token: Option<&str>,
    ) -> Result<Verdict, ServiceError> {
        let (spray, verdict) = self.judge(username, ip, device_token, true).await?;
        if spray && !self.limiter.is_known_device(username, device_token) {
            return Ok(Verdict::Spray);
        }
        Ok(match verdict {
            Ok(admitted) => Verdict::Admitted(admitted),
            Err(refusal) => Verdict::Limited(refusal),
        })
    }

    /// Whether a spray is on (asked with `with_spray` and a ceiling) and the verdict of the
    /// attempt's own keys: in memory, or from one read of the shared counts.
    async fn judge(
        &self,
        username: &str,
        ip: IpAddr,
        device_token: Option<&str>,
        with_spray: bool,
    ) -> Result<(bool, Result<Admitted, Refusal>), ServiceError> {
        let with_spray = with_spray && self.ceiling > 0;
        let Some(store) = self.shared else {
            let now = Instant::now();
            let spray = with_spray && self.spray.active(now, self.ceiling);
            let checked = self.limiter.check_device(username, ip, device_token, now);
            return Ok((spray, checked.map(|()| Admitted::default())));
        };
        let keys = shared_keys(username, ip);
        let mut refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        if with_spray {
            refs.push(spray::SHARED_KEY);
        }
        let counts = self.reads.read(store, &refs).await?;
        let now = store.now_ms();
        let spray = with_spray
            && spray::shared_active(counts.iter().find(|c| c.key == spray::SHARED_KEY), now);
        let known_device = self.limiter.is_known_device(username, device_token);
        let verdict = self.limiter.judge_shared(&keys, &counts, known_device, now);
        Ok((spray, verdict))
    }

    /// Counts one failed password attempt across every account (the spray ceiling); true when
    /// it started a spray episode, which the caller audits (once in all: with PostgreSQL, the
    /// one portal that took the episode's lock).
    pub async fn record_spray_failure(&self) -> bool {
        if self.ceiling == 0 {
            return false;
        }
        let Some(store) = self.shared else {
            return self.spray.record_failure(Instant::now(), self.ceiling);
        };
        match self.count_spray(store).await {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count a failed attempt across accounts in the database");
                false
            }
        }
    }

    async fn count_spray(&self, store: &Store) -> Result<bool, StoreError> {
        let now = store.now_ms();
        let key = [(spray::SHARED_KEY, spray::shared_kept_until(now))];
        let counts = store.count_failure(&key, spray::shared_windows()).await?;
        let due = counts
            .iter()
            .find(|c| c.key == spray::SHARED_KEY)
            .and_then(|row| spray::shared_episode_due(row, now, self.ceiling));
        match due {
            Some(until) => store.lock_failures(spray::SHARED_KEY, until).await,
            None => Ok(false),
        }
    }

    /// Counts one failed attempt on the account, the source and the pair.
    pub async fn record_failure(&self, username: &str, ip: IpAddr) {
        let Some(store) = self.shared else {
            self.limiter.record_failure(username, ip, Instant::now());
            return;
        };
        if let Err(e) = self.count_shared(store, username, ip).await {
            tracing::warn!(error = %e, "cannot count a failed attempt in the database");
        }
    }

    async fn count_shared(
        &self,
        store: &Store,
        username: &str,
        ip: IpAddr,
    ) -> Result<(), StoreError> {
        let keys = shared_keys(username, ip);
        let now = store.now_ms();
        let rows: Vec<(&str, i64)> = keys
            .iter()
            .map(String::as_str)
            .zip(self.limiter.kept_until(now))
            .collect();
        let counts = store.count_failure(&rows, self.limiter.windows()).await?;
        let due = counts
            .iter()
            .find(|c| c.key == keys[2])
            .and_then(|account| self.limiter.lock_due(account, now));
        if let Some(until) = due {
            if store.lock_failures(&keys[2], until).await? {
                tracing::warn!(key = %keys[2], "account locked: too many failures within an hour");
            }
        }
        if self.limiter.prune_due(Instant::now()) {
            let pruned = store.prune_failures().await?;
            tracing::debug!(pruned, "expired login failure counts deleted");
        }
        Ok(())
    }

    /// A success forgets the account's short-window failures (the hourly count and a lock
    /// stay); with PostgreSQL, only when the check saw some.
    pub async fn record_success(&self, username: &str, admitted: Admitted) {
        let Some(store) = self.shared else {
            self.limiter.record_success(username);
            return;
        };
        if !admitted.account_failures {
            return;
        }
        if let Err(e) = store
            .forget_short_failures(&shared_account_key(username))
            .await
        {
            tracing::warn!(error = %e, "cannot reset an account's failures in the database");
        }
    }
}
