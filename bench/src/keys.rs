//! Deterministic benchmark keys: peer `i` of seed `s` gets the same key in every tool and config.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use sha2::{Digest as _, Sha256};
use std::net::Ipv4Addr;

/// First tunnel address handed to load-generator peers (100.64.16.0 + i).
pub const LOADGEN_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 16, 0);

/// The private key of peer `index` under `seed`.
pub fn secret(seed: u64, index: u32) -> StaticSecret {
    let mut h = Sha256::new();
    h.update(b"sesame-bench");
    h.update(seed.to_le_bytes());
    h.update(index.to_le_bytes());
    let bytes: [u8; 32] = h.finalize().into();
    StaticSecret::from(bytes)
}

pub fn public(secret: &StaticSecret) -> PublicKey {
    PublicKey::from(secret)
}

/// Tunnel address of load-generator peer `index`.
pub fn address(index: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(LOADGEN_BASE) + index)
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes a base64 WireGuard key.
pub fn decode(text: &str) -> anyhow::Result<[u8; 32]> {
    let v = STANDARD
        .decode(text.trim())
        .map_err(|e| anyhow::anyhow!("key {text:?} is not base64: {e}"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("key {text:?} is not 32 bytes"))
}

/// A fresh random key.
pub fn random() -> StaticSecret {
    StaticSecret::random_from_rng(rand_core::OsRng)
}
