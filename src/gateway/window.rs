//! Access windows to protected (`mfa = true`) resources: one device's window as the control plane opened it, and when the gateway closes it (expiry, idleness).
//!
//! Pure: every decision takes the wall clock (unix ms) from the caller. A device peer with
//! protected resources holds one [`Window`] (peers without any hold none, and pay nothing for
//! it). The control plane sends the window's end (`mfa_until_ms`, from the portal's unlock) with
//! the peer set; the gateway lets packets to protected resources through only while
//! `now < until` and the device's protected traffic has not been idle for `[mfa] idle`. When
//! it sees either end it closes the window itself ([`WindowEnd`]): the same `until` sent again
//! stays closed (the portal may not know yet); a new `until` is a new window.

use std::sync::Arc;

use super::flowlog::WindowEnd;
use crate::policy::RuleSet;

/// What the engine should do with a packet to a protected resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Inside an open window: the packet goes on and counts as activity.
    Pass,
    /// No window open (never opened, withdrawn, or closed before): dropped.
    Refused,
    /// The window ended at this packet: dropped, and the window closes now for this reason.
    Closing(WindowEnd),
}

/// One device's access window and the rules it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Rules of the device's protected resources (never empty).
    pub rules: Arc<RuleSet>,
    /// The window's end as the control plane sent it (unix ms); None: no window.
    until_ms: Option<i64>,
    /// Last packet to a protected resource (unix ms); None until the gateway first looks at
    /// the window (the idle clock starts when the window reaches it).
    last_activity_ms: Option<i64>,
    /// The end of a window this gateway closed on its own: sent again, it stays closed.
    closed_until: Option<i64>,
}

impl Window {
    pub fn new(rules: Arc<RuleSet>, until_ms: Option<i64>) -> Window {
        Window {
            rules,
            until_ms,
            last_activity_ms: None,
            closed_until: None,
        }
    }

    /// The window's end the control plane sent (None: none open on its side).
    pub fn until_ms(&self) -> Option<i64> {
        self.until_ms
    }

    /// Whether packets to protected resources may pass, as far as the control plane and the
    /// gateway's own closing know (expiry and idleness are judged at the next packet or tick).
    pub fn is_open(&self) -> bool {
        self.until_ms.is_some() && self.until_ms != self.closed_until
    }

    /// Whether the rules and end the control plane now sends differ from these.
    pub fn differs(&self, rules: &RuleSet, until_ms: Option<i64>) -> bool {
        *self.rules != *rules || self.until_ms != until_ms
    }

    /// Takes the control plane's rules and end. Returns true when an open window is withdrawn
    /// by it (the caller cuts the live protected flows; the portal audits why).
    pub fn update(&mut self, rules: Arc<RuleSet>, until_ms: Option<i64>) -> bool {
        let was_open = self.is_open();
        self.rules = rules;
        if until_ms != self.until_ms {
            // Another window (or none): its idle clock starts afresh.
            self.until_ms = until_ms;
            self.last_activity_ms = None;
        }
        was_open && !self.is_open()
    }

    /// How an open window has ended at `now_ms`, if it has (the end passes first).
    fn ended(&mut self, now_ms: i64, idle_ms: i64) -> Option<WindowEnd> {
        let until = self.until_ms?;
        if now_ms >= until {
            return Some(WindowEnd::Expired);
        }
        let last = *self.last_activity_ms.get_or_insert(now_ms);
        (now_ms.saturating_sub(last) >= idle_ms).then_some(WindowEnd::Idle)
    }

    /// A packet to a protected resource at `now_ms`.
    pub fn admit(&mut self, now_ms: i64, idle_ms: i64) -> Admit {
        if !self.is_open() {
            return Admit::Refused;
        }
        match self.ended(now_ms, idle_ms) {
            None => {
                self.last_activity_ms = Some(now_ms);
                Admit::Pass
            }
            Some(end) => {
                self.closed_until = self.until_ms;
                Admit::Closing(end)
            }
        }
    }

    /// The timer's look at an open window: closes it and says why when it has ended.
    pub fn check(&mut self, now_ms: i64, idle_ms: i64) -> Option<WindowEnd> {
        if !self.is_open() {
            return None;
        }
        let end = self.ended(now_ms, idle_ms)?;
        self.closed_until = self.until_ms;
        Some(end)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "window_tests.rs"]
mod tests;
