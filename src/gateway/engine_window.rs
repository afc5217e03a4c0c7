//! The engine's side of access windows: packets to protected resources, windows closed on expiry or idleness and their protected flows cut.
//!
//! Only peers with protected resources get here: a packet reaches [`Engine::check_protected`]
//! when no ordinary rule allowed it (the cold path), and the timer looks at a peer's window
//! only while it is open (`Peer::windowed`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Engine;
use crate::gateway::conntrack::FlowTable;
use crate::gateway::flowlog::{FlowRecord, PeerRef, WindowClosed, WindowEnd};
use crate::gateway::packet::PacketInfo;
use crate::gateway::peers::{Peer, PeerState};
use crate::gateway::stats::DropReason;
use crate::gateway::window::{Admit, Window};
use crate::policy::{ResourceId, RuleSet};
use crate::time::duration_ms;

/// `[mfa] idle` until the control plane says otherwise.
pub const DEFAULT_MFA_IDLE: Duration = Duration::from_secs(30 * 60);

/// Forgets the flows towards the window's protected resources that the peer's ordinary rules
/// do not allow as well; returns how many (their replies are dropped from now on).
pub fn cut_protected(flows: &mut FlowTable, window: &Window, ordinary: &RuleSet) -> usize {
    flows.remove_where(|k| {
        window.rules.allows(k.remote, k.proto, k.remote_port)
            && !ordinary.allows(k.remote, k.proto, k.remote_port)
    })
}

impl Engine {
    /// How long a window stays open without a packet to a protected resource (`[mfa] idle`).
    pub fn set_mfa_idle(&self, idle: Duration) {
        self.mfa_idle_ms.store(duration_ms(idle), Ordering::Relaxed);
    }

    fn mfa_idle_ms(&self) -> i64 {
        self.mfa_idle_ms.load(Ordering::Relaxed)
    }

    /// A packet no ordinary rule allowed: it passes when it goes to a protected resource inside
    /// the peer's open window (and counts as activity); refused as `mfa_required` outside it.
    #[cold]
    #[inline(never)]
    pub(super) fn check_protected(
        &self,
        peer: &Peer,
        st: &mut PeerState,
        info: &PacketInfo,
    ) -> Result<ResourceId, DropReason> {
        let Some(w) = st.window.as_deref_mut() else {
            return Err(DropReason::PolicyDenied);
        };
        let resource = w
            .rules
            .matching(info.dst, info.proto, info.dport())
            .ok_or(DropReason::PolicyDenied)?;
        let now_ms = self.clock.now_ms();
        match w.admit(now_ms, self.mfa_idle_ms()) {
            Admit::Pass => Ok(resource),
            Admit::Refused => Err(DropReason::MfaRequired),
            Admit::Closing(end) => {
                self.close_window(peer, st, end, now_ms);
                Err(DropReason::MfaRequired)
            }
        }
    }

    /// The timer's look at a peer's open window (its lock held): closes it when it has ended.
    pub(super) fn check_window(&self, peer: &Peer, st: &mut PeerState) {
        let Some(w) = st.window.as_deref_mut() else {
            return;
        };
        let now_ms = self.clock.now_ms();
        if let Some(end) = w.check(now_ms, self.mfa_idle_ms()) {
            self.close_window(peer, st, end, now_ms);
        }
    }

    /// A window the gateway closed: its live protected flows cut, an `mfa.window_closed` record.
    fn close_window(&self, peer: &Peer, st: &mut PeerState, end: WindowEnd, now_ms: i64) {
        peer.windowed.store(false, Ordering::Release);
        let Some(w) = st.window.as_deref() else {
            return;
        };
        let flows_cut = cut_protected(&mut st.flows, w, &peer.rules.load());
        let until_ms = w.until_ms().unwrap_or(now_ms);
        tracing::info!(
            peer = %peer.label.load(),
            reason = end.as_str(),
            until = %crate::time::format(until_ms),
            flows_cut,
            "access window closed"
        );
        self.record(FlowRecord::WindowClosed(WindowClosed {
            peer: PeerRef::of(peer),
            until_ms,
            closed_ms: now_ms,
            reason: end,
            flows_cut,
        }));
    }
}
