//! Handshake replay protection that outlives sessions: the TAI64N timestamp carried (encrypted)
//! by an initiation, read as the responder would. boringtun keeps the last timestamp inside a
//! peer's `Tunn`, which the gateway frees after 540 s idle; the gateway keeps it per peer.
//!
//! Hand-written because boringtun does not expose the timestamp; the steps follow the
//! WireGuard paper (§5.4.2) with the same primitives boringtun uses (BLAKE2s, HMAC-BLAKE2s,
//! ChaCha20-Poly1305 from ring).

use blake2::digest::{FixedOutput as _, KeyInit as _, Update as _};
use blake2::{Blake2s256, Digest as _};
use boringtun::x25519::{PublicKey, StaticSecret};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

/// A TAI64N timestamp as sent (big-endian seconds then nanoseconds): byte order is time order.
pub type Tai64N = [u8; 12];

/// HASH(CONSTRUCTION) and HASH(HASH(CONSTRUCTION) || IDENTIFIER), per the protocol.
const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

fn hash(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    blake2::Digest::update(&mut h, a);
    blake2::Digest::update(&mut h, b);
    h.finalize().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    type HmacBlake2s = hmac::SimpleHmac<Blake2s256>;
    let Ok(mut m) = HmacBlake2s::new_from_slice(key) else {
        unreachable!("HMAC takes any key length")
    };
    for p in parts {
        m.update(p);
    }
    m.finalize_fixed().into()
}

fn open(key: &[u8; 32], aad: &[u8; 32], sealed: &[u8], out: &mut [u8]) -> Option<()> {
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).ok()?);
    let mut buf = sealed.to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad),
            &mut buf,
        )
        .ok()?;
    if plain.len() != out.len() {
        return None;
    }
    out.copy_from_slice(plain);
    Some(())
}

/// Offsets in a 148-byte initiation (message type 1): type and reserved (4), sender index (4),
/// ephemeral (32), encrypted static (32 + 16), encrypted timestamp (12 + 16), mac1, mac2.
const EPHEMERAL: std::ops::Range<usize> = 8..40;
const STATIC: std::ops::Range<usize> = 40..88;
const TIMESTAMP: std::ops::Range<usize> = 88..116;

/// The timestamp of `datagram`, an initiation already identified by boringtun's anonymous
/// parse as coming from `peer_static`; `None` if it does not decrypt. A successful decryption
/// proves the peer (or a replay of it) wrote it: the key needs DH(gateway static, peer static).
pub fn initiation_timestamp(
    secret: &StaticSecret,
    public: &PublicKey,
    peer_static: &[u8; 32],
    datagram: &[u8],
) -> Option<Tai64N> {
    if datagram.len() != 148 {
        return None;
    }
    let eph: [u8; 32] = datagram[EPHEMERAL].try_into().ok()?;
    let encrypted_static = &datagram[STATIC];
    let encrypted_timestamp = &datagram[TIMESTAMP];
    let mut chaining_key: [u8; 32] = Blake2s256::digest(CONSTRUCTION).into();
    let mut h = hash(&hash(&chaining_key, IDENTIFIER), public.as_bytes());
    let ephemeral = PublicKey::from(eph);
    h = hash(&h, ephemeral.as_bytes());
    chaining_key = hmac(&hmac(&chaining_key, &[ephemeral.as_bytes()]), &[&[0x01]]);
    let temp = hmac(
        &chaining_key,
        &[secret.diffie_hellman(&ephemeral).as_bytes()],
    );
    chaining_key = hmac(&temp, &[&[0x01]]);
    let key = hmac(&temp, &[&chaining_key, &[0x02]]);
    let mut decrypted_static = [0u8; 32];
    open(&key, &h, encrypted_static, &mut decrypted_static)?;
    if &decrypted_static != peer_static {
        return None;
    }
    h = hash(&h, encrypted_static);
    let shared = secret.diffie_hellman(&PublicKey::from(*peer_static));
    let temp = hmac(&chaining_key, &[shared.as_bytes()]);
    chaining_key = hmac(&temp, &[&[0x01]]);
    let key = hmac(&temp, &[&chaining_key, &[0x02]]);
    let mut ts = [0u8; 12];
    open(&key, &h, encrypted_timestamp, &mut ts)?;
    Some(ts)
}
