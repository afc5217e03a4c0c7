//! Where the failure limiter's counts live: in this process's memory with SQLite (`sesame serve`
//! is the only process), in PostgreSQL's `login_failures` otherwise, shared by every portal on
//! the database. The rules are `service::ratelimit`'s either way.
//!
//! With PostgreSQL, a check is one primary-key read of the attempt's three keys; a failure is
//! one upsert of them (plus, on the 100th failure of an hour, the account's lock, and once a
//! minute per process a delete of the expired rows); a success writes only when the account
//! had failures to forget. A database that does not answer fails the check like the rest of the
//! login (503); a failure that cannot be counted is logged (the next check fails the same way).

use std::net::IpAddr;
use std::time::Instant;

use crate::store::{Backend, Store, StoreError};

use super::ratelimit::{shared_account_key, shared_keys, Admitted, FailureLimiter, Refusal};
use super::{ServiceError, Services};

/// The limiter with the store its counts live in (`None`: in memory).
pub(super) struct Limits<'a> {
    limiter: &'a FailureLimiter,
    shared: Option<&'a Store>,
}

impl Services {
    /// The failure limits, on the counts this backend keeps them in.
    pub(super) fn limits(&self) -> Limits<'_> {
        let store = self.store();
        Limits {
            limiter: self.limiter(),
            shared: (store.backend() == Backend::Postgres).then_some(store),
        }
    }
}

impl Limits<'_> {
    /// `Ok(Err(_))` when this attempt must be refused (429); a valid `device_token` of this
    /// account skips the account's own limits.
    pub async fn check(
        &self,
        username: &str,
        ip: IpAddr,
        device_token: Option<&str>,
    ) -> Result<Result<Admitted, Refusal>, ServiceError> {
        let Some(store) = self.shared else {
            let checked = self
                .limiter
                .check_device(username, ip, device_token, Instant::now());
            return Ok(checked.map(|()| Admitted::default()));
        };
        let keys = shared_keys(username, ip);
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let counts = store.failure_counts(&refs).await?;
        let known_device = self.limiter.is_known_device(username, device_token);
        Ok(self
            .limiter
            .judge_shared(&keys, &counts, known_device, store.now_ms()))
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
