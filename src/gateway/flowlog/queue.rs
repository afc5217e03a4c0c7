//! The bounded queue between the packet workers and the audit writer: whole windows in one operation, records out one by one, losses counted per kind.
//!
//! A worker hands its window's tables over as one message ([`FlowLog::send_window`]): one queue
//! operation per window instead of one per record, and no record built on the worker. The
//! receiving side ([`FlowReceiver`]) turns the tables into [`FlowRecord`]s as the consumer asks
//! for them, then gives the emptied tables back to a small pool the workers take their next
//! window's tables from (cleared, not dropped: no allocation once warm). The bound counts
//! records, not messages: a window that does not fit whole keeps its first records and the rest
//! is counted as lost, per kind.

use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{AllowedFlow, Clock, DeniedFlow, FlowRecord, LostCounts, RecordKind, Tables};

/// Emptied tables kept for the workers' next windows (about one per worker).
const MAX_SPARE: usize = 16;

/// What one queue operation carries.
#[derive(Debug)]
enum Message {
    Record(FlowRecord),
    Window(Window),
}

/// One worker's window in flight: its tables, the clock to date them, how many records of it
/// the queue admitted and how many were turned into records already.
#[derive(Debug)]
struct Window {
    clock: Clock,
    window_start_ms: i64,
    tables: Tables,
    admitted: usize,
    next: usize,
}

/// What both ends share: records in the queue and the pool of emptied tables.
#[derive(Debug, Default)]
struct Shared {
    /// Records in the queue now (admitted, not yet handed to the consumer).
    queued: AtomicU64,
    spare: Mutex<Vec<Tables>>,
}

/// The shared side of flow auditing: the window, the queue's sending end, loss counters.
#[derive(Debug)]
pub struct FlowLog {
    window: Duration,
    capacity: u64,
    tx: SyncSender<Message>,
    shared: Arc<Shared>,
    lost: [AtomicU64; RecordKind::ALL.len()],
    /// Queue operations so far (a window is one).
    sends: AtomicU64,
    /// Unix ms of the first loss not yet reported (0: none).
    first_loss_ms: AtomicI64,
}

impl FlowLog {
    /// A log aggregating over `window`, with a queue of `capacity` records, and its receiver.
    pub fn new(window: Duration, capacity: usize) -> (Arc<FlowLog>, FlowReceiver) {
        // Every message carries at least one admitted record: the channel never fills first.
        let (tx, rx) = sync_channel(capacity.max(1));
        let shared = Arc::new(Shared::default());
        let log = FlowLog {
            window: window.max(Duration::from_millis(100)),
            capacity: capacity as u64,
            tx,
            shared: Arc::clone(&shared),
            lost: Default::default(),
            sends: AtomicU64::new(0),
            first_loss_ms: AtomicI64::new(0),
        };
        let rx = FlowReceiver {
            rx,
            shared,
            current: RefCell::new(None),
        };
        (Arc::new(log), rx)
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Reserves room for up to `n` records; returns how many fit.
    fn reserve(&self, n: usize) -> usize {
        let mut got = 0;
        let _ = self
            .shared
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                got = usize::try_from(self.capacity.saturating_sub(q))
                    .unwrap_or(usize::MAX)
                    .min(n);
                (got > 0).then_some(q + got as u64)
            });
        got
    }

    fn unreserve(&self, n: usize) {
        self.shared.queued.fetch_sub(n as u64, Ordering::Relaxed);
    }

    fn count_lost(&self, kind: RecordKind, n: usize) {
        if n == 0 {
            return;
        }
        self.lost[kind as usize].fetch_add(n as u64, Ordering::Relaxed);
        let _ = self.first_loss_ms.compare_exchange(
            0,
            crate::time::now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Offers a record to the queue; never blocks. A full queue counts it as lost.
    pub fn send(&self, record: FlowRecord) {
        let kind = record.kind();
        if self.reserve(1) == 0 {
            return self.count_lost(kind, 1);
        }
        self.sends.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Message::Record(record)).is_err() {
            self.unreserve(1);
            self.count_lost(kind, 1);
        }
    }

    /// Offers a worker's whole window in one queue operation; never blocks. What does not fit
    /// (its last records) is counted as lost, per kind.
    pub(super) fn send_window(&self, clock: Clock, window_start_ms: i64, tables: Tables) {
        let total = tables.records();
        if total == 0 {
            return self.give_back(tables);
        }
        let admitted = self.reserve(total);
        let mut lost = tables.kinds_from(admitted);
        if admitted > 0 {
            self.sends.fetch_add(1, Ordering::Relaxed);
            let w = Window {
                clock,
                window_start_ms,
                tables,
                admitted,
                next: 0,
            };
            if let Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) =
                self.tx.try_send(Message::Window(w))
            {
                self.unreserve(admitted);
                if let Message::Window(w) = m {
                    lost = w.tables.kinds_from(0);
                }
            }
        }
        for (kind, n) in lost {
            self.count_lost(kind, n);
        }
    }

    /// Tables for a worker's next window: emptied ones from the pool, or new ones.
    pub(super) fn fresh_tables(&self) -> Tables {
        match self.shared.spare.lock() {
            Ok(mut spare) => spare.pop().unwrap_or_default(),
            Err(_) => Tables::default(),
        }
    }

    fn give_back(&self, tables: Tables) {
        self.shared.give_back(tables);
    }

    /// Records waiting in the queue now (for metrics).
    pub fn depth(&self) -> u64 {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Queue operations so far: one per window a worker sent, one per session record.
    pub fn sends(&self) -> u64 {
        self.sends.load(Ordering::Relaxed)
    }

    /// Records lost so far, per kind (for metrics and `audit.overflow`).
    pub fn lost(&self) -> LostCounts {
        LostCounts(std::array::from_fn(|i| {
            self.lost[i].load(Ordering::Relaxed)
        }))
    }

    /// When the first loss since the last call happened (None: no loss since).
    pub fn take_first_loss(&self) -> Option<i64> {
        match self.first_loss_ms.swap(0, Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

impl Shared {
    fn give_back(&self, mut tables: Tables) {
        tables.clear();
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < MAX_SPARE {
                spare.push(tables);
            }
        }
    }

    fn took(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// The consumer's end of the queue: records one at a time, in the order each worker sent them.
#[derive(Debug)]
pub struct FlowReceiver {
    rx: Receiver<Message>,
    shared: Arc<Shared>,
    /// The window being turned into records.
    current: RefCell<Option<Window>>,
}

impl FlowReceiver {
    /// The next record if one is queued; never blocks.
    pub fn try_recv(&self) -> Result<FlowRecord, TryRecvError> {
        loop {
            if let Some(r) = self.next_of_current() {
                return Ok(r);
            }
            let m = self.rx.try_recv()?;
            if let Some(r) = self.take(m) {
                return Ok(r);
            }
        }
    }

    /// The next record, waiting for one; an error once the sending side is gone.
    pub fn recv(&self) -> Result<FlowRecord, RecvError> {
        loop {
            if let Some(r) = self.next_of_current() {
                return Ok(r);
            }
            let m = self.rx.recv()?;
            if let Some(r) = self.take(m) {
                return Ok(r);
            }
        }
    }

    /// Every record queued now, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = FlowRecord> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }

    fn take(&self, m: Message) -> Option<FlowRecord> {
        match m {
            Message::Record(r) => {
                self.shared.took();
                Some(r)
            }
            Message::Window(w) => {
                *self.current.borrow_mut() = Some(w);
                None
            }
        }
    }

    fn next_of_current(&self) -> Option<FlowRecord> {
        let mut current = self.current.borrow_mut();
        let w = current.as_mut()?;
        while w.next < w.admitted {
            let r = w.tables.record(w.next, &w.clock, w.window_start_ms);
            w.next += 1;
            self.shared.took();
            if r.is_some() {
                return r;
            }
        }
        if let Some(w) = current.take() {
            self.shared.give_back(w.tables);
        }
        None
    }
}

impl Tables {
    /// Records these tables make: allowed, then denied in first-seen order, then summaries.
    fn records(&self) -> usize {
        self.aggs.len() + self.denied.len() + self.summaries.len()
    }

    fn clear(&mut self) {
        self.peers.clear();
        self.aggs.clear();
        self.denied.clear();
        self.summaries.clear();
    }

    /// How many records of each kind come at or after position `from`.
    fn kinds_from(&self, from: usize) -> [(RecordKind, usize); 2] {
        let denied = self.denied.len() + self.summaries.len();
        let denied_before = from.saturating_sub(self.aggs.len()).min(denied);
        [
            (
                RecordKind::FlowAllowed,
                self.aggs.len().saturating_sub(from),
            ),
            (RecordKind::FlowDenied, denied - denied_before),
        ]
    }

    /// The record at position `i` (see [`Tables::records`]).
    fn record(&self, i: usize, clock: &Clock, window_start_ms: i64) -> Option<FlowRecord> {
        if let Some(a) = self.aggs.get(i) {
            let mut ports = a.ports[..a.nports].to_vec();
            ports.sort_unstable();
            return Some(FlowRecord::Allowed(AllowedFlow {
                peer: a.peer.clone(),
                resource: a.resource,
                window_start_ms,
                first_ms: clock.ms(a.first),
                last_ms: clock.ms(a.last),
                packets_out: a.packets_out,
                bytes_out: a.bytes_out,
                packets_in: a.packets_in,
                bytes_in: a.bytes_in,
                protocols: a.protocols,
                ports,
                ports_truncated: a.ports_truncated,
            }));
        }
        let i = i - self.aggs.len();
        if let Some(d) = self.denied.get(i) {
            let k = d.key;
            return Some(FlowRecord::Denied(DeniedFlow {
                peer: self.peers.get(k.slot())?.clone(),
                dst: Some(k.dst()),
                proto: k.proto(),
                port: k.port(),
                reason: k.reason(),
                count: d.count,
                window_start_ms,
                first_ms: clock.ms(d.first),
                last_ms: clock.ms(d.last),
                destinations: 1,
            }));
        }
        let o = self.summaries.get(i - self.denied.len())?;
        Some(FlowRecord::Denied(DeniedFlow {
            peer: o.peer.clone(),
            dst: None,
            proto: 0,
            port: None,
            reason: o.reason,
            count: o.count,
            window_start_ms,
            first_ms: clock.ms(o.first),
            last_ms: clock.ms(o.last),
            destinations: o.distinct.estimate(),
        }))
    }
}
