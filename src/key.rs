//! WireGuard keys: one public and one private key type, base64 as `wg` writes them, vetted here once.
//!
//! Every key that crosses a trust boundary (the config, an enrolment, a rotation, the store, the
//! agent's files, the benchmark tools) goes through [`PublicKey::parse`] or [`PrivateKey::parse`];
//! the rest of the code carries the types, never `[u8; 32]` or base64 strings.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Length of a key in bytes (44 characters of base64).
pub const KEY_LEN: usize = 32;

/// Why a text is not a usable WireGuard key. The words are French first, English second: the
/// portal shows them to the person enrolling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("pas du base64 / not base64")]
    NotBase64,
    #[error("32 octets attendus / 32 bytes expected")]
    Length(usize),
    #[error("clé nulle / all-zero key")]
    AllZero,
    /// A point of small order: every exchange with it yields a known secret.
    #[error("clé de petit ordre / low-order key")]
    LowOrder,
    /// A peer presented the gateway's own public key.
    #[error("c'est la clé de la passerelle / it is the gateway's key")]
    GatewayKey,
}

/// Decodes 44 characters of standard base64 (surrounding blanks ignored) into 32 bytes.
pub fn decode_base64(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::Length(len))
}

/// Standard base64 of 32 bytes, as `wg` prints keys.
pub fn encode_base64(bytes: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(bytes)
}

/// The X25519 points of small order (each with its non-canonical twin, `p` and `p + 1`), as
/// libsodium lists them: a Diffie-Hellman with any of them gives a shared secret an attacker
/// knows. Compared with the top bit ignored, as X25519 ignores it.
///
/// Hand-written rather than computed with the crate (`SharedSecret::was_contributory` after
/// a scalar multiplication): the store vets every key it reads back, 10,000 per published
/// peer set, and a comparison costs nothing where a multiplication costs tens of microseconds.
/// The test checks this table against the crate's own answer.
const LOW_ORDER: [[u8; KEY_LEN]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    // p - 1, p, p + 1 (p = 2^255 - 19)
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

fn is_low_order(bytes: &[u8; KEY_LEN]) -> bool {
    LOW_ORDER
        .iter()
        .any(|bad| bad[..31] == bytes[..31] && bad[31] == bytes[31] & 0x7f)
}

/// A WireGuard (X25519) public key: 32 bytes, shown and written as base64.
///
/// [`PublicKey::parse`] refuses what no honest peer has: a text that is not 32 bytes of base64,
/// the all-zero key and the other points of small order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Base64 text to a vetted key.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        PublicKey::from_bytes(decode_base64(text)?)
    }

    /// Raw bytes to a vetted key (the rules of [`PublicKey::parse`] but the base64).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<PublicKey, KeyError> {
        if bytes == [0; KEY_LEN] {
            return Err(KeyError::AllZero);
        }
        if is_low_order(&bytes) {
            return Err(KeyError::LowOrder);
        }
        Ok(PublicKey(bytes))
    }

    /// A peer's key: [`PublicKey::parse`], and not `ours` (the gateway's own key).
    pub fn parse_peer(text: &str, ours: &PublicKey) -> Result<PublicKey, KeyError> {
        let key = PublicKey::parse(text)?;
        if &key == ours {
            return Err(KeyError::GatewayKey);
        }
        Ok(key)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn to_bytes(self) -> [u8; KEY_LEN] {
        self.0
    }

    /// Standard base64, as `wg pubkey` prints it.
    pub fn to_base64(&self) -> String {
        encode_base64(&self.0)
    }

    /// The key as x25519-dalek (and so boringtun) takes it.
    pub fn to_dalek(self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }
}

impl From<&PrivateKey> for PublicKey {
    fn from(secret: &PrivateKey) -> PublicKey {
        secret.public_key()
    }
}

impl From<PublicKey> for x25519_dalek::PublicKey {
    fn from(key: PublicKey) -> x25519_dalek::PublicKey {
        key.to_dalek()
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        PublicKey::parse(s)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        PublicKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A WireGuard (X25519) private key. Its `Debug` shows the public half only; the secret leaves
/// only through [`PrivateKey::to_base64`] (for a 0600 file) and [`PrivateKey::to_dalek`].
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// A new key from the operating system's random generator.
    pub fn generate() -> PrivateKey {
        PrivateKey(x25519_dalek::StaticSecret::random_from_rng(
            rand_core::OsRng,
        ))
    }

    /// Base64 text (as `wg genkey` writes it) to a key; any 32 bytes are a private key.
    pub fn parse(text: &str) -> Result<PrivateKey, KeyError> {
        decode_base64(text).map(PrivateKey::from_bytes)
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PrivateKey {
        PrivateKey(x25519_dalek::StaticSecret::from(bytes))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// Standard base64 of the secret: for the key's own file (mode 0600), nowhere else.
    pub fn to_base64(&self) -> String {
        encode_base64(self.0.as_bytes())
    }

    /// The key as x25519-dalek (and so boringtun) takes it.
    pub fn to_dalek(&self) -> x25519_dalek::StaticSecret {
        self.0.clone()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

#[cfg(test)]
#[path = "key_tests.rs"]
mod tests;
