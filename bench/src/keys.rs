//! Deterministic benchmark keys: peer `i` of seed `s` gets the same key in every tool and config.

use sesame::key::{PrivateKey, PublicKey};
use sha2::{Digest as _, Sha256};
use std::net::Ipv4Addr;

/// First tunnel address handed to load-generator peers (100.64.16.0 + i).
pub const LOADGEN_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 16, 0);

/// The private key of peer `index` under `seed`.
pub fn secret(seed: u64, index: u32) -> PrivateKey {
    let mut h = Sha256::new();
    h.update(b"sesame-bench");
    h.update(seed.to_le_bytes());
    h.update(index.to_le_bytes());
    let bytes: [u8; 32] = h.finalize().into();
    PrivateKey::from_bytes(bytes)
}

pub fn public(secret: &PrivateKey) -> PublicKey {
    secret.public_key()
}

/// Tunnel address of load-generator peer `index`.
pub fn address(index: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(LOADGEN_BASE) + index)
}

/// A fresh random key.
pub fn random() -> PrivateKey {
    PrivateKey::generate()
}
