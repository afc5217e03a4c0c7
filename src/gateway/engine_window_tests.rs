//! Access windows in the engine: a real boringtun laptop, protected and ordinary resources, a manual wall clock.

use super::*;
use crate::gateway::flowlog::{DenyReason, FlowReceiver, FlowRecord, WindowEnd};
use crate::time::ManualClock;

const T0: i64 = 1_800_000_000_000;
const WINDOW_MS: i64 = 10 * 60 * 1000;
const MFA_IDLE: Duration = Duration::from_secs(30 * 60);
const RH_ID: u32 = 4;

fn ordinary() -> RuleSet {
    RuleSet::with_origins([("198.18.20.10/32 tcp:443".parse::<Rule>().unwrap(), RH_ID)])
}

fn protected() -> RuleSet {
    rules()
}

/// The setup's laptop, granted RH (ordinary) and payroll (protected), window end `until`.
fn spec(s: &Setup, until: Option<i64>) -> PeerSpec {
    PeerSpec {
        public_key: s.laptop_key,
        address: LAPTOP,
        rules: ordinary(),
        protected: protected(),
        mfa_until_ms: until,
        label: "device:7:alice".into(),
        persistent_keepalive: None,
    }
}

fn windowed(until: Option<i64>) -> (Setup, Arc<ManualClock>, FlowReceiver) {
    let (log, rx) = FlowLog::new(Duration::from_secs(60), 1024);
    let mut s = setup_with(Some(log));
    let clock = Arc::new(ManualClock::new(T0));
    s.engine = s.engine.with_clock(clock.clone());
    s.engine.set_mfa_idle(MFA_IDLE);
    let report = s.engine.peers.set(vec![spec(&s, until)]);
    assert_eq!(report.updated, 1, "{report:?}");
    s.handshake();
    let _ = rx.try_iter().count();
    (s, clock, rx)
}

impl Setup {
    /// Runs the engine's timers once (the engine's own clock moves past their period).
    fn tick(&mut self) -> Collect {
        self.now += TIMER_PERIOD + Duration::from_millis(1);
        let mut out = Collect::default();
        self.engine.tick(self.now, &mut self.scratch, &mut out);
        out
    }

    fn passes(&mut self, packet: &[u8]) -> bool {
        self.send_ip(packet).tun.len() == 1
    }

    fn answered(&mut self, packet: &[u8]) -> bool {
        self.tun_in(packet).net.len() == 1
    }
}

fn syn(to: Ipv4Addr, sport: u16) -> Vec<u8> {
    build::tcp(LAPTOP, to, sport, 443, 0x02)
}

fn synack(from: Ipv4Addr, dport: u16) -> Vec<u8> {
    build::tcp(from, LAPTOP, 443, dport, 0x12)
}

fn closed(rx: &FlowReceiver) -> Vec<crate::gateway::flowlog::WindowClosed> {
    rx.try_iter()
        .filter_map(|r| match r {
            FlowRecord::WindowClosed(w) => Some(w),
            _ => None,
        })
        .collect()
}

#[test]
fn payroll_is_refused_without_a_window_while_hr_answers() {
    let (mut s, _clock, _rx) = windowed(None);
    assert!(!s.passes(&syn(PAIE, 40000)));
    assert_eq!(s.drops(DropReason::MfaRequired), 1);
    assert_eq!(s.drops(DropReason::PolicyDenied), 0);
    assert!(s.passes(&syn(RH, 40001)));
    assert!(s.answered(&synack(RH, 40001)));
    // Nothing granted at all is still `policy_denied`, not a second-factor matter.
    assert!(!s.passes(&build::tcp(LAPTOP, PAIE, 40002, 22, 0x02)));
    assert_eq!(s.drops(DropReason::PolicyDenied), 1);
}

#[test]
fn denied_flows_say_mfa_required() {
    let (mut s, _clock, rx) = windowed(None);
    assert!(!s.passes(&syn(PAIE, 40000)));
    s.flows.as_mut().unwrap().flush();
    let denied: Vec<_> = rx
        .try_iter()
        .filter_map(|r| match r {
            FlowRecord::Denied(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].reason, DenyReason::MfaRequired);
    assert_eq!(denied[0].port, Some(443));
}

#[test]
fn a_window_opens_with_the_peer_set_and_expires_on_time_cutting_payroll_flows_only() {
    let (mut s, clock, rx) = windowed(None);
    let until = T0 + WINDOW_MS;
    // The portal opens a window: a new peer set, same session.
    let report = s.engine.peers.set(vec![spec(&s, Some(until))]);
    assert_eq!((report.updated, report.removed), (1, 0));
    assert!(s.passes(&syn(PAIE, 40000)));
    assert!(s.answered(&synack(PAIE, 40000)));
    assert!(s.passes(&syn(RH, 40001)));
    clock.set(until - 1);
    assert!(s.passes(&syn(PAIE, 40000)));
    s.tick();
    assert!(closed(&rx).is_empty());
    // The end passes: the timer closes the window with no packet needed.
    clock.set(until);
    s.tick();
    let c = closed(&rx);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].reason, WindowEnd::Expired);
    assert_eq!((c[0].until_ms, c[0].closed_ms), (until, until));
    assert_eq!(c[0].flows_cut, 1);
    assert_eq!(c[0].peer.label.as_str(), "device:7:alice");
    // The live payroll flow is cut (its replies are dropped), HR's stays.
    assert!(!s.answered(&synack(PAIE, 40000)));
    assert!(s.answered(&synack(RH, 40001)));
    assert!(!s.passes(&syn(PAIE, 40000)));
    assert!(s.passes(&syn(RH, 40001)));
    // Closed once: no second record at the next tick.
    s.tick();
    assert!(closed(&rx).is_empty());
    // The control plane sends the same window again (the portal has not heard): still closed.
    s.engine.peers.set(vec![spec(&s, Some(until))]);
    assert!(!s.passes(&syn(PAIE, 40000)));
    // A new unlock: a new end.
    s.engine.peers.set(vec![spec(&s, Some(until + WINDOW_MS))]);
    assert!(s.passes(&syn(PAIE, 40000)));
}

#[test]
fn an_idle_window_closes_at_the_next_packet_or_tick() {
    let until = T0 + 10 * WINDOW_MS;
    let (mut s, clock, rx) = windowed(Some(until));
    assert!(s.passes(&syn(PAIE, 40000)));
    clock.advance(MFA_IDLE - Duration::from_millis(1));
    assert!(s.passes(&syn(PAIE, 40000)));
    // HR traffic is not protected activity.
    clock.advance(MFA_IDLE - Duration::from_millis(1));
    assert!(s.passes(&syn(RH, 40001)));
    clock.advance(Duration::from_millis(1));
    assert!(!s.passes(&syn(PAIE, 40000)));
    let c = closed(&rx);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].reason, WindowEnd::Idle);
    assert_eq!(c[0].flows_cut, 1);
    assert_eq!(s.drops(DropReason::MfaRequired), 1);

    // The timer finds an idle window too.
    s.engine.peers.set(vec![spec(&s, Some(until + 1))]);
    s.tick();
    clock.advance(MFA_IDLE);
    s.tick();
    let c = closed(&rx);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].reason, WindowEnd::Idle);
}

#[test]
fn a_window_the_portal_withdraws_cuts_flows_without_a_gateway_record() {
    let (mut s, _clock, rx) = windowed(Some(T0 + WINDOW_MS));
    assert!(s.passes(&syn(PAIE, 40000)));
    let report = s.engine.peers.set(vec![spec(&s, None)]);
    assert_eq!((report.updated, report.removed), (1, 0));
    assert!(!s.answered(&synack(PAIE, 40000)));
    assert!(!s.passes(&syn(PAIE, 40000)));
    // The portal audits why (down, logout, reset, revoked): the gateway writes nothing.
    assert!(closed(&rx).is_empty());
    // Upserts carry windows the same way.
    let mut again = spec(&s, Some(T0 + WINDOW_MS + 1));
    assert!(s.engine.peers.upsert(again.clone()).removed == 0);
    assert!(s.passes(&syn(PAIE, 40000)));
    again.protected = RuleSet::deny_all();
    s.engine.peers.upsert(again);
    assert!(!s.answered(&synack(PAIE, 40000)));
    assert_eq!(s.drops(DropReason::PolicyDenied), 0);
    assert!(!s.passes(&syn(PAIE, 40000)));
    assert_eq!(s.drops(DropReason::PolicyDenied), 1);
}

#[test]
fn a_window_without_a_session_still_closes_on_time() {
    let until = T0 + WINDOW_MS;
    let (mut s, clock, rx) = windowed(Some(until));
    // The laptop's session goes away (the peer is no longer live)…
    let p = s
        .engine
        .peers
        .load()
        .by_key(&s.laptop_key)
        .cloned()
        .unwrap();
    let _ = p.cut();
    clock.set(until);
    s.tick();
    let c = closed(&rx);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].flows_cut, 0);
    assert!(!p.windowed.load(Ordering::Relaxed));
}

#[test]
fn peers_without_protected_resources_hold_no_window() {
    let s = setup();
    let p = s
        .engine
        .peers
        .load()
        .by_key(&s.laptop_key)
        .cloned()
        .unwrap();
    assert!(!p.gated.load(Ordering::Relaxed));
    assert!(p.state.lock().window.is_none());
    // A window end alone (no protected rules) gives no window either.
    let mut spec = spec(&s, Some(T0 + WINDOW_MS));
    spec.protected = RuleSet::deny_all();
    spec.rules = rules();
    s.engine.peers.set(vec![spec]);
    assert!(p.state.lock().window.is_none());
    assert!(!p.windowed.load(Ordering::Relaxed));
}
