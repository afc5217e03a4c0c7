//! The engine's timers (boringtun's rekey, keepalive and expiry; sweeps) and its per-peer counters.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::TunnResult;

use super::{Engine, Output, TIMER_PERIOD};
use crate::gateway::flowlog::{EndReason, FlowRecord};
use crate::gateway::stats::{DropReason, PeerStats};

/// A session is active while its keys are usable (boringtun's REJECT_AFTER_TIME).
const REJECT_AFTER: Duration = Duration::from_secs(180);

impl Engine {
    /// Timers: boringtun's rekey/keepalive/expiry for every live peer, the shared rate limiter
    /// reset, flow and handshake-limiter sweeps. Any worker may call it often; it runs at most
    /// every [`TIMER_PERIOD`] and never makes a worker wait for another.
    pub fn tick(&self, now: Instant, scratch: &mut [u8], out: &mut impl Output) {
        let (timers, sweep) = {
            let Some(mut t) = self.ticks.try_lock() else {
                return;
            };
            let timers = due(&mut t.last_timers, now, TIMER_PERIOD);
            let sweep = timers && due(&mut t.last_sweep, now, Duration::from_secs(1));
            (timers, sweep)
        };
        if !timers {
            return;
        }
        self.initiate_pending(scratch, out);
        self.limiter.reset_count();
        if sweep {
            self.handshakes.lock().collect(now);
        }
        let table = self.peers.load();
        for peer in table.iter() {
            // A peer with an open access window is looked at even without a session.
            let windowed = peer.windowed.load(Ordering::Acquire);
            if !peer.live.load(Ordering::Acquire) && !windowed {
                continue;
            }
            let mut st = peer.state.lock();
            let st = &mut *st;
            if windowed {
                self.check_window(peer, st);
            }
            if sweep {
                st.flows.expire(now, self.flow_idle);
            }
            let Some(tunn) = st.tunn.as_mut() else {
                continue;
            };
            match tunn.update_timers(scratch) {
                TunnResult::WriteToNetwork(d) => match st.endpoint {
                    Some(ep) => out.to_network(ep, d),
                    None => self.drops.add(DropReason::NoEndpoint),
                },
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    // Session over: give the ~11 KiB back; the next handshake recreates it.
                    st.tunn = None;
                    st.flows.clear();
                    peer.live.store(false, Ordering::Release);
                    if let Some(mark) = st.session.take() {
                        let end =
                            mark.end(peer, st.endpoint, EndReason::Expired, crate::time::now_ms());
                        self.record(FlowRecord::SessionEnded(end));
                    }
                }
                _ => {}
            }
        }
    }

    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let table = self.peers.load();
        let wall = SystemTime::now();
        let mut v: Vec<PeerStats> = table
            .iter()
            .map(|p| {
                let st = p.state.lock();
                let since = st.tunn.as_ref().and_then(|t| t.time_since_last_handshake());
                PeerStats {
                    public_key: p.public_key,
                    label: (**p.label.load()).clone(),
                    address: p.address,
                    endpoint: st.endpoint,
                    rx_bytes: p.counters.rx_bytes.load(Ordering::Relaxed),
                    rx_packets: p.counters.rx_packets.load(Ordering::Relaxed),
                    tx_bytes: p.counters.tx_bytes.load(Ordering::Relaxed),
                    tx_packets: p.counters.tx_packets.load(Ordering::Relaxed),
                    last_handshake: since.and_then(|d| wall.checked_sub(d)),
                    session_active: since.is_some_and(|d| d < REJECT_AFTER),
                    flows: st.flows.len(),
                }
            })
            .collect();
        v.sort_by_key(|s| s.address);
        v
    }
}

fn due(last: &mut Option<Instant>, now: Instant, period: Duration) -> bool {
    match *last {
        Some(t) if now.saturating_duration_since(t) < period => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}
