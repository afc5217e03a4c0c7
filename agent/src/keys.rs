//! The laptop's X25519 key: generated here from OS randomness, never sent, base64 as WireGuard writes it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use x25519_dalek::{PublicKey, StaticSecret};

/// A key that is not 32 bytes of base64.
#[derive(Debug, thiserror::Error)]
#[error("not a WireGuard key (expected 32 bytes of base64)")]
pub struct KeyError;

/// A new private key from the operating system's random generator.
pub fn generate() -> StaticSecret {
    StaticSecret::random_from_rng(rand_core::OsRng)
}

/// The base64 public key of `secret`: the only part that leaves the laptop.
pub fn public_b64(secret: &StaticSecret) -> String {
    STANDARD.encode(PublicKey::from(secret).as_bytes())
}

/// Base64 of the private key, for the config file only.
pub fn secret_b64(secret: &StaticSecret) -> String {
    STANDARD.encode(secret.as_bytes())
}

/// Parses 32 bytes of base64.
pub fn decode(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD.decode(text.trim()).map_err(|_| KeyError)?;
    bytes.try_into().map_err(|_| KeyError)
}

pub fn decode_secret(text: &str) -> Result<StaticSecret, KeyError> {
    decode(text).map(StaticSecret::from)
}

pub fn decode_public(text: &str) -> Result<PublicKey, KeyError> {
    decode(text).map(PublicKey::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ_and_round_trip() {
        let a = generate();
        let b = generate();
        assert_ne!(a.as_bytes(), b.as_bytes());
        let text = secret_b64(&a);
        assert_eq!(text.len(), 44);
        let back = decode_secret(&text).expect("decode");
        assert_eq!(back.as_bytes(), a.as_bytes());
        assert_eq!(public_b64(&back), public_b64(&a));
    }

    #[test]
    fn known_vector_matches_wireguard() {
        // `echo yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk= | wg pubkey`
        let secret = decode_secret("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").expect("key");
        assert_eq!(
            public_b64(&secret),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(decode("").is_err());
        assert!(decode("not base64!").is_err());
        assert!(decode("AAAA").is_err());
    }
}
