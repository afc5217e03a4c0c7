//! Group commit for the portal's per-request writes (successful logins, enrolments, audit events, second-factor steps).
//!
//! Every commit of a writer transaction costs one fsync (SQLite `synchronous=FULL`, PostgreSQL
//! `synchronous_commit=on`) and writers are serialised (the audit chain), so one transaction
//! per request caps the portal at ~1/fsync requests per second. Here concurrent requests hand
//! their writes to one task that commits whatever is queued in ONE writer transaction and then
//! answers each caller: durability is unchanged (a caller returns only after the commit that
//! holds its rows), the chain stays linear, and the fsync is shared by the batch. If a batch
//! fails, its items are retried one transaction each, so one bad item never fails the others.
//! An enrolment may be refused (code used, key in use…): its checks are reads made before any
//! of its writes, so a refusal writes nothing, answers its caller, and its neighbours still
//! commit, without a savepoint (two round trips less each). A write that fails after its checks
//! (a database error) fails the transaction, and the batch is retried one item per transaction.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::audit;
use super::enrol::{enrol_check, enrol_write, Allocator, Checked, EnrolWrite, Enrolled};
use super::sessions::{insert_sessions, WebSession};
use super::{users, Store, StoreError};
use crate::audit::NewAuditEvent;
use crate::directory::DirectoryUser;

/// Most items committed in one transaction.
const MAX_BATCH: usize = 256;
/// Items waiting for the committer; senders wait (backpressure) beyond this.
const QUEUE: usize = 4096;

/// One request's writes.
#[derive(Debug, Clone)]
pub(super) enum Write {
    /// A successful login: refresh the user, open the session, audit it (`auth.login`, and
    /// the code's `mfa.verified` before it when a second factor was checked). With `step`, the
    /// TOTP step of that code is spent first: when it was spent already (a replay racing this
    /// login), nothing of the login is written and it answers `Accepted(false)`.
    Login {
        user: DirectoryUser,
        session: WebSession,
        audit: Vec<NewAuditEvent>,
        step: Option<i64>,
    },
    /// A lone audit event (refusals).
    Audit(NewAuditEvent),
    /// An enrolment (in a savepoint: it may be refused without failing the batch).
    Enrol(Box<EnrolWrite>),
    /// A TOTP step used by `username` (lower-cased): accepted once, refused when that step or a
    /// later one was already used (a replay), without failing the batch.
    AcceptStep { username: String, step: i64 },
    /// An access window opened (its code's step spent first; refused like a login's).
    Window(Box<super::mfa::WindowOpening>),
}

/// What a write gives back once committed.
#[derive(Debug)]
enum Done {
    Written,
    Enrolled(Box<Enrolled>),
    /// Whether the step (alone, or a login's) was accepted.
    Accepted(bool),
}

type Reply = Result<Done, StoreError>;

struct Item {
    write: Write,
    reply: oneshot::Sender<Reply>,
}

/// The committer of a store (started on first use, on the caller's runtime).
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: OnceLock<mpsc::Sender<Item>>,
}

impl GroupCommit {
    fn sender(&self, store: &Store) -> &mpsc::Sender<Item> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            // The task owns a copy of the store without the queue, so dropping every Store
            // drops the sender and ends the task.
            let inner = Store {
                pool: store.pool.clone(),
                backend: store.backend,
                clock: Arc::clone(&store.clock),
                code_key: store.code_key.clone(),
                failover: store.failover.clone(),
                group: Arc::new(GroupCommit::default()),
            };
            tokio::spawn(run(inner, rx));
            tx
        })
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Item>) {
    let mut batch: Vec<Item> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let writes: Vec<&Write> = batch.iter().map(|i| &i.write).collect();
        match apply(&store, &writes).await {
            Ok(results) => {
                for (item, r) in batch.drain(..).zip(results) {
                    let _ = item.reply.send(r);
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(item) = batch.pop() {
                    let _ = item.reply.send(Err(e));
                }
            }
            Err(_) => {
                for item in batch.drain(..) {
                    let r = apply_one(&store, &item.write).await;
                    let _ = item.reply.send(r);
                }
            }
        }
    }
}

/// One write in its own transaction.
async fn apply_one(store: &Store, write: &Write) -> Reply {
    let mut results = apply(store, &[write]).await?;
    results
        .pop()
        .unwrap_or(Err(StoreError::Unavailable(sqlx::Error::WorkerCrashed)))
}

/// The TOTP step each write spends, if any (user names lower-cased).
fn steps_of(writes: &[&Write]) -> Vec<Option<(String, i64)>> {
    writes
        .iter()
        .map(|w| match w {
            Write::Login {
                user,
                step: Some(step),
                ..
            } => Some((super::users::normalize_username(&user.username), *step)),
            Write::Window(open) => open
                .step
                .map(|step| (super::users::normalize_username(&open.username), step)),
            Write::AcceptStep { username, step } => Some((username.clone(), *step)),
            _ => None,
        })
        .collect()
}

/// All `writes` in one writer transaction; each enrolment's own outcome (a refused one wrote
/// nothing). `Err`: the transaction itself failed, nothing was written.
async fn apply(store: &Store, writes: &[&Write]) -> Result<Vec<Reply>, StoreError> {
    let now = store.now_ms();
    let mut tx = store.write_tx().await?;
    // The batch's TOTP steps first, in one statement (a user's second step in the batch after
    // it): a login or window whose step was spent writes nothing.
    let verdicts = super::mfa::accept_steps(&mut tx, &steps_of(writes), now).await?;
    let mut results = Vec::with_capacity(writes.len());
    let mut addresses = Allocator::default();
    let mut sessions: Vec<&WebSession> = Vec::new();
    let mut login_users: Vec<&DirectoryUser> = Vec::new();
    let mut windows: Vec<&super::mfa::WindowOpening> = Vec::new();
    // The logins' and lone audit events, appended together after the loop (one chain-head
    // read and multi-row inserts for the batch; enrolments append their own events inside the
    // loop, in the same transaction, so the chain stays linear).
    let mut events: Vec<&NewAuditEvent> = Vec::new();
    for (w, accepted) in writes.iter().zip(verdicts) {
        match w {
            Write::Login {
                user,
                session,
                audit: ev,
                step,
            } => {
                if step.is_some() && !accepted {
                    results.push(Ok(Done::Accepted(false)));
                    continue;
                }
                login_users.push(user);
                sessions.push(session);
                events.extend(ev);
                results.push(Ok(Done::Accepted(true)));
            }
            Write::Audit(ev) => {
                events.push(ev);
                results.push(Ok(Done::Written));
            }
            Write::Window(open) => {
                let opened = open.step.is_none() || accepted;
                if opened {
                    windows.push(open);
                    events.extend(&open.audit);
                }
                results.push(Ok(Done::Accepted(opened)));
            }
            Write::AcceptStep { .. } => results.push(Ok(Done::Accepted(accepted))),
            Write::Enrol(e) => {
                match enrol_check(&mut tx, store.backend, now, e, &mut addresses).await? {
                    Checked::Refused(refusal) => results.push(Err(refusal)),
                    Checked::Ready {
                        device_name,
                        address,
                    } => {
                        let enrolled = enrol_write(&mut tx, now, e, device_name, address).await?;
                        results.push(Ok(Done::Enrolled(Box::new(enrolled))));
                    }
                }
            }
        }
    }
    super::mfa::write_windows(&mut tx, &windows, now).await?;
    // The batch's logins: users, then sessions, one statement each (SQLite allows 32,766
    // parameters, PostgreSQL 65,535: a batch of MAX_BATCH logins needs 6 per row).
    users::upsert_many(&mut tx, &login_users, now).await?;
    insert_sessions(&mut tx, &sessions).await?;
    audit::append_many(&mut tx, now, &events).await?;
    tx.commit().await?;
    Ok(results)
}

impl Store {
    /// Commits `write` together with the other writes queued meanwhile; returns once it is
    /// durable (or failed). Outside a Tokio runtime's task context, or if the committer is gone,
    /// it is written in its own transaction.
    pub(super) async fn commit_grouped(&self, write: Write) -> Result<(), StoreError> {
        self.submit(write).await.map(|_| ())
    }

    /// An enrolment, group-committed (see [`Store::enrol`]).
    pub(crate) async fn commit_enrolment(&self, write: EnrolWrite) -> Result<Enrolled, StoreError> {
        match self.submit(Write::Enrol(Box::new(write))).await? {
            Done::Enrolled(enrolled) => Ok(*enrolled),
            _ => Err(StoreError::Unavailable(sqlx::Error::Protocol(
                "the group committer answered an enrolment without its device".into(),
            ))),
        }
    }

    /// A TOTP step, group-committed with concurrent logins (see [`Store::mfa_accept_step`]).
    pub(crate) async fn commit_step(
        &self,
        username: String,
        step: i64,
    ) -> Result<bool, StoreError> {
        self.submit_verdict(Write::AcceptStep { username, step })
            .await
    }

    /// Commits a write whose answer is a step's verdict (a step alone, a login, a window):
    /// whether it was accepted, hence written.
    pub(super) async fn submit_verdict(&self, write: Write) -> Result<bool, StoreError> {
        match self.submit(write).await? {
            Done::Accepted(accepted) => Ok(accepted),
            _ => Err(StoreError::Unavailable(sqlx::Error::Protocol(
                "the group committer answered a write without its verdict".into(),
            ))),
        }
    }

    async fn submit(&self, write: Write) -> Reply {
        let (reply, answer) = oneshot::channel();
        let item = Item { write, reply };
        let item = match self.group.sender(self).send(item).await {
            Ok(()) => match answer.await {
                Ok(r) => return r,
                Err(_) => None,
            },
            Err(mpsc::error::SendError(item)) => Some(item),
        };
        match item {
            Some(item) => apply_one(self, &item.write).await,
            // The committer dropped the reply without answering (runtime shutting down): the
            // outcome is unknown, report the store as unavailable.
            None => Err(StoreError::Unavailable(sqlx::Error::WorkerCrashed)),
        }
    }
}

impl Store {
    /// Records a successful login in one durable step: refreshes the user from the directory,
    /// opens a web session and appends `audit` (normally `auth.login` success), group-committed
    /// with concurrent logins. Returns the cookie value (shown once) and the session.
    pub async fn record_login(
        &self,
        user: &DirectoryUser,
        session: &super::NewSession,
        audit: NewAuditEvent,
    ) -> Result<(String, WebSession), StoreError> {
        self.record_login_with(user, session, vec![audit], None)
            .await?
            .ok_or(StoreError::Unavailable(sqlx::Error::Protocol(
                "a login without a step was refused its step".into(),
            )))
    }

    /// [`Store::record_login`] with several events, appended in order, and the TOTP `step`
    /// of the login's code spent in the same transaction: `None` (nothing written) when that
    /// step, or a later one, was spent already.
    pub async fn record_login_with(
        &self,
        user: &DirectoryUser,
        session: &super::NewSession,
        audit: Vec<NewAuditEvent>,
        step: Option<i64>,
    ) -> Result<Option<(String, WebSession)>, StoreError> {
        let (token, row) = super::sessions::new_session(session, self.now_ms());
        let write = Write::Login {
            user: user.clone(),
            session: row.clone(),
            audit,
            step,
        };
        Ok(self.submit_verdict(write).await?.then_some((token, row)))
    }

    /// Appends one audit event, group-committed with concurrent appends; returns once it is
    /// durable. (Use [`Store::append_audit`] to get the stored event back.)
    pub async fn append_audit_grouped(&self, ev: NewAuditEvent) -> Result<(), StoreError> {
        self.commit_grouped(Write::Audit(ev)).await
    }
}
