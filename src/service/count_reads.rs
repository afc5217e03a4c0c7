//! Reads of the failure counts several portals share (`login_failures`), coalesced: the password
//! attempts of this process that ask at once are answered by one statement.
//!
//! Every attempt needs its keys' counts before its password is tried: one read each is a
//! round trip and a statement per login on the pool and in PostgreSQL. Here the first attempt
//! reads at once; those that ask while a read is under way wait for the next read, which asks
//! for the keys of all of them together. No attempt is answered from counts older than its
//! question: the read that answers it starts after it asked, as its own read would have. A read
//! that fails fails every attempt it answers, at once and of the same kind (PostgreSQL down:
//! each is answered 503 after one wait for the pool, not one wait each).

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::store::{FailureCount, Store, StoreError};

/// Most attempts answered by one read (4 keys each at most: the statement's parameters stay
/// far under PostgreSQL's 65,535).
const MAX_ASKS: usize = 256;
/// Attempts waiting for the reader; senders wait (backpressure) beyond this.
const QUEUE: usize = 4096;

/// One attempt's question: the counts of `keys`, or the error of the read that answered it.
struct Ask {
    keys: Vec<String>,
    reply: oneshot::Sender<Result<Vec<FailureCount>, Arc<StoreError>>>,
}

/// The reader of one process's counts (started on first use, on the caller's runtime).
#[derive(Default)]
pub(super) struct CountReads {
    queue: OnceLock<mpsc::Sender<Ask>>,
}

impl CountReads {
    /// The counts of `keys` (those that have any), read together with the other attempts
    /// asking meanwhile (its error, if it fails). If the reader is gone (its runtime shut
    /// down), this attempt reads alone.
    pub(super) async fn read(
        &self,
        store: &Store,
        keys: &[&str],
    ) -> Result<Vec<FailureCount>, StoreError> {
        if tokio::runtime::Handle::try_current().is_err() && self.queue.get().is_none() {
            // No runtime to start the reader on: this attempt reads alone.
            return store.failure_counts(keys).await;
        }
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            keys: keys.iter().map(|k| (*k).to_string()).collect(),
            reply,
        };
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(store.clone(), rx));
            tx
        });
        if queue.send(ask).await.is_ok() {
            if let Ok(answer) = answer.await {
                return answer.map_err(shared_error);
            }
        }
        store.failure_counts(keys).await
    }
}

/// Answers the queued attempts, one read per round, until every sender is gone.
async fn run(store: Store, mut rx: mpsc::Receiver<Ask>) {
    let mut asks: Vec<Ask> = Vec::with_capacity(MAX_ASKS);
    while rx.recv_many(&mut asks, MAX_ASKS).await > 0 {
        let mut keys: Vec<&str> = asks
            .iter()
            .flat_map(|a| a.keys.iter().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let counts = store.failure_counts(&keys).await.map_err(Arc::new);
        for ask in asks.drain(..) {
            let mine = match &counts {
                Ok(all) => Ok(all
                    .iter()
                    .filter(|c| ask.keys.contains(&c.key))
                    .cloned()
                    .collect()),
                Err(e) => Err(Arc::clone(e)),
            };
            let _ = ask.reply.send(mine);
        }
    }
}

/// The shared read's error, for one of the attempts it answered: of the same kind (the database
/// unavailable, or an error of it), with the shared error as its source.
fn shared_error(shared: Arc<StoreError>) -> StoreError {
    let unavailable = matches!(*shared, StoreError::Unavailable(_));
    let source = sqlx::Error::Io(std::io::Error::other(shared));
    if unavailable {
        StoreError::Unavailable(source)
    } else {
        StoreError::Database(source)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::FailureWindows;

    const WINDOWS: FailureWindows = FailureWindows {
        short_ms: 60_000,
        long_ms: 3_600_000,
    };

    /// Concurrent attempts, answered by shared reads, each get exactly the counts of their own
    /// keys: those with failures, none of their neighbours', whatever the keys they share.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_attempt_gets_its_own_keys_counts_from_a_shared_read() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url).await.unwrap();
        let until = store.now_ms() + 60_000;
        // Failures on the odd users and on one source every attempt shares.
        for i in (1..40).step_by(2) {
            let user = format!("user:u{i}");
            store
                .count_failure(&[(user.as_str(), until), ("ip:198.18.0.1", until)], WINDOWS)
                .await
                .unwrap();
        }
        let reads = std::sync::Arc::new(CountReads::default());
        let mut attempts = Vec::new();
        for i in 0..40 {
            let (reads, store) = (reads.clone(), store.clone());
            attempts.push(tokio::spawn(async move {
                let user = format!("user:u{i}");
                let keys = ["ip:198.18.0.1", "pair:none", user.as_str()];
                let mut got: Vec<(String, i64)> = reads
                    .read(&store, &keys)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| (c.key, c.short_count))
                    .collect();
                got.sort();
                (i, got)
            }));
        }
        for attempt in attempts {
            let (i, got) = attempt.await.unwrap();
            let mut want = vec![("ip:198.18.0.1".to_string(), 20)];
            if i % 2 == 1 {
                want.push((format!("user:u{i}"), 1));
            }
            assert_eq!(got, want, "attempt {i}");
        }
    }

    /// A failed shared read fails each attempt it answered with an error of its kind (the
    /// database unavailable stays a 503), the shared error kept as the source.
    #[test]
    fn a_failed_shared_read_fails_each_attempt_with_its_kind() {
        let down = shared_error(Arc::new(StoreError::Unavailable(sqlx::Error::PoolTimedOut)));
        assert!(matches!(down, StoreError::Unavailable(_)));
        let source = std::error::Error::source(&down).unwrap();
        assert!(std::error::Error::source(source).is_some());
        let other = shared_error(Arc::new(StoreError::InvalidInput("no".into())));
        assert!(matches!(other, StoreError::Database(_)));
    }
}
