//! The composition root's framework: each role is a named task started by one function that
//! registers its handle here; the shutdown order is written once, in [`Stage`].
//!
//! `sesame serve`, `sesame portal` and `sesame gateway` are each a subset of the role
//! functions of the submodules ([`front`], [`jobs`], [`dataplane`]), composed in
//! `commands::serve`, `commands::portal` and `commands::gateway`. The site gateway's roles (feed
//! client, event shipper: `sesame gateway --site`) go in a module of their own beside these.

pub mod dataplane;
pub mod front;
pub mod jobs;
pub mod site;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::service::BoxFuture;

/// When a role is stopped. Stages stop in this order, each completely before the next; roles
/// of one stage stop in the order they were started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Stopped at the shutdown request itself: the portal and the metrics listener (nothing new
    /// comes in).
    Front,
    /// The loops: publisher, feed, reloader and directory sync, session purge, audit jobs.
    Loops,
    /// The data plane: open sessions end, flow windows flush into the audit queue.
    DataPlane,
    /// The flow audit writer drains its queue.
    AuditWriter,
    /// The last signed checkpoint of the run.
    Seal,
    /// Sockets and the store: UAPI, the store's pool, the admin socket.
    Last,
}

impl Stage {
    /// Every stage, in stopping order.
    pub const ORDER: [Stage; 6] = [
        Stage::Front,
        Stage::Loops,
        Stage::DataPlane,
        Stage::AuditWriter,
        Stage::Seal,
        Stage::Last,
    ];
}

/// How one role ends.
enum Ending {
    /// A spawned task: it watches its stage's signal and returns.
    Task(tokio::task::JoinHandle<anyhow::Result<()>>),
    /// Work done when the stage stops (a blocking shutdown, the last checkpoint, a close).
    AtStop(Box<dyn FnOnce() -> BoxFuture<'static, anyhow::Result<()>> + Send>),
}

struct Running {
    name: &'static str,
    stage: Stage,
    ending: Ending,
}

/// The roles of one process and how they stop.
pub struct Roles {
    /// One signal per stage (index: `Stage as usize`); the first is the shutdown request.
    signals: Vec<Arc<watch::Sender<bool>>>,
    running: Vec<Running>,
}

impl Default for Roles {
    fn default() -> Self {
        Self::new()
    }
}

impl Roles {
    pub fn new() -> Self {
        Roles {
            signals: Stage::ORDER
                .iter()
                .map(|_| Arc::new(watch::channel(false).0))
                .collect(),
            running: Vec::new(),
        }
    }

    /// Turns true when `stage` starts stopping (`Stage::Front`: at the shutdown request).
    pub fn stop_signal(&self, stage: Stage) -> watch::Receiver<bool> {
        self.signals[stage as usize].subscribe()
    }

    /// The shutdown request (start-up waits on it too: the database may be down).
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.stop_signal(Stage::Front)
    }

    /// Requests the shutdown when `request` completes (SIGTERM, SIGINT, a test's signal).
    pub fn shutdown_on(&self, request: impl Future<Output = ()> + Send + 'static) {
        let front = Arc::clone(&self.signals[0]);
        tokio::spawn(async move {
            request.await;
            front.send_replace(true);
        });
    }

    /// Starts role `name`: `task` gets its stage's stop signal and returns when it turns true.
    /// A role that fails before requests the shutdown of the whole process (its error is
    /// what [`Roles::run`] returns).
    pub fn spawn<F>(
        &mut self,
        name: &'static str,
        stage: Stage,
        task: impl FnOnce(watch::Receiver<bool>) -> F,
    ) where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let fut = task(self.stop_signal(stage));
        let front = Arc::clone(&self.signals[0]);
        let handle = tokio::spawn(async move {
            let result = fut.await;
            if let Err(e) = &result {
                if !*front.borrow() {
                    tracing::error!(role = name, error = %format!("{e:#}"), "role failed: stopping");
                    front.send_replace(true);
                }
            }
            result
        });
        self.running.push(Running {
            name,
            stage,
            ending: Ending::Task(handle),
        });
    }

    /// Registers what role `name` does when `stage` stops (no task of its own).
    pub fn at_stop<F>(
        &mut self,
        name: &'static str,
        stage: Stage,
        stop: impl FnOnce() -> F + Send + 'static,
    ) where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.running.push(Running {
            name,
            stage,
            ending: Ending::AtStop(Box::new(move || Box::pin(stop()))),
        });
    }

    /// The roles registered so far, in start order (for logs and tests).
    pub fn names(&self) -> Vec<&'static str> {
        self.running.iter().map(|r| r.name).collect()
    }

    /// Runs until the shutdown request (or a role's failure), then stops every role.
    pub async fn run(self) -> anyhow::Result<()> {
        let mut requested = self.shutdown_requested();
        let _ = requested.wait_for(|stop| *stop).await;
        tracing::info!("shutting down");
        self.stop().await
    }

    /// Stops every role, stage by stage in [`Stage::ORDER`]. Each role is awaited even when
    /// an earlier one failed; the first error is returned, the others logged.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for stage in Stage::ORDER {
            self.signals[stage as usize].send_replace(true);
            let (now, later): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
                .into_iter()
                .partition(|r| r.stage == stage);
            self.running = later;
            for role in now {
                let result = match role.ending {
                    Ending::Task(handle) => match handle.await {
                        Ok(r) => r,
                        Err(e) => Err(anyhow::Error::new(e)),
                    },
                    Ending::AtStop(stop) => stop().await,
                };
                match result {
                    Ok(()) => tracing::debug!(role = role.name, "role stopped"),
                    Err(e) if first_error.is_none() => first_error = Some(e.context(role.name)),
                    Err(e) => {
                        tracing::error!(role = role.name, error = %format!("{e:#}"), "role stopped with an error")
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests;
