//! Helpers around boringtun's `Tunn`: in-process handshakes and result lines.

use std::sync::Arc;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use sesame::key::PrivateKey;

/// A responder-side rate limiter that never asks for cookies (for raw measurements).
pub fn unlimited(public: &PublicKey) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(public, u64::MAX))
}

/// Two Tunns with an established session (initiator `a`, responder `b`), done in memory.
pub fn pair(a_key: PrivateKey, b_key: PrivateKey) -> anyhow::Result<(Tunn, Tunn)> {
    let (a_key, b_key) = (a_key.to_dalek(), b_key.to_dalek());
    let a_pub = PublicKey::from(&a_key);
    let b_pub = PublicKey::from(&b_key);
    let mut a = Tunn::new(a_key, b_pub, None, None, 1, Some(unlimited(&a_pub)));
    let mut b = Tunn::new(b_key, a_pub, None, None, 2, Some(unlimited(&b_pub)));
    let mut m1 = [0u8; 256];
    let mut m2 = [0u8; 256];
    let mut out = [0u8; 256];
    let init = match a.format_handshake_initiation(&mut m1, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        r => anyhow::bail!("initiation: {r:?}"),
    };
    let resp = match b.decapsulate(None, &init, &mut m2) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        r => anyhow::bail!("response: {r:?}"),
    };
    match a.decapsulate(None, &resp, &mut out) {
        // The initiator answers with a keepalive that confirms the session to the responder.
        TunnResult::WriteToNetwork(k) => {
            let k = k.to_vec();
            let _ = b.decapsulate(None, &k, &mut m2);
        }
        r => anyhow::bail!("handshake completion: {r:?}"),
    }
    Ok((a, b))
}

/// Prints one machine-readable result line: `RESULT name value unit`.
pub fn result(name: &str, value: f64, unit: &str) {
    #[allow(clippy::print_stdout)]
    {
        println!("RESULT {name} {value:.3} {unit}");
    }
}

/// Message type of a WireGuard datagram (1 init, 2 response, 3 cookie, 4 data).
pub fn msg_type(d: &[u8]) -> u32 {
    if d.len() < 4 {
        0
    } else {
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }
}

/// Receiver index of a response, cookie reply or data datagram.
pub fn receiver_idx(d: &[u8]) -> Option<u32> {
    match msg_type(d) {
        2 if d.len() >= 12 => Some(u32::from_le_bytes([d[8], d[9], d[10], d[11]])),
        3 | 4 if d.len() >= 8 => Some(u32::from_le_bytes([d[4], d[5], d[6], d[7]])),
        _ => None,
    }
}
