use super::*;

#[test]
fn a_known_wireguard_pair_round_trips() {
    // `echo yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk= | wg pubkey`
    let secret = PrivateKey::parse("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").expect("key");
    let public = secret.public_key();
    assert_eq!(
        public.to_base64(),
        "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
    );
    assert_eq!(public.to_string(), public.to_base64());
    assert_eq!(PublicKey::parse(&public.to_base64()), Ok(public));
    assert_eq!(
        secret.to_base64(),
        "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
    );
    assert_eq!(
        x25519_dalek::PublicKey::from(&secret.to_dalek()).to_bytes(),
        public.to_bytes()
    );
}

#[test]
fn malformed_texts_are_refused_with_their_reason() {
    assert_eq!(PublicKey::parse(""), Err(KeyError::Length(0)));
    assert_eq!(PublicKey::parse("not base64!"), Err(KeyError::NotBase64));
    assert_eq!(PublicKey::parse("*)(uid=*"), Err(KeyError::NotBase64));
    assert_eq!(PublicKey::parse("AAAA"), Err(KeyError::Length(3)));
    let short = STANDARD.encode([1u8; 31]);
    assert_eq!(PublicKey::parse(&short), Err(KeyError::Length(31)));
    assert_eq!(
        PublicKey::parse(&encode_base64(&[0; 32])),
        Err(KeyError::AllZero)
    );
    assert!(PrivateKey::parse("AAAA").is_err());
    assert_eq!(
        KeyError::NotBase64.to_string(),
        "pas du base64 / not base64"
    );
}

#[test]
fn every_low_order_point_is_refused_and_the_table_agrees_with_the_crate() {
    let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
    for bad in LOW_ORDER {
        for top in [0u8, 0x80] {
            let mut bytes = bad;
            bytes[31] |= top;
            // The crate's own verdict: an exchange with a low-order point is not contributory.
            let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(bytes));
            assert!(!shared.was_contributory(), "{bytes:?}");
            let refused = PublicKey::from_bytes(bytes).expect_err("low order accepted");
            assert!(
                matches!(refused, KeyError::AllZero | KeyError::LowOrder),
                "{refused:?}"
            );
        }
    }
    for _ in 0..64 {
        let key = PrivateKey::generate().public_key();
        let shared = secret.diffie_hellman(&key.to_dalek());
        assert!(shared.was_contributory());
        assert_eq!(PublicKey::from_bytes(key.to_bytes()), Ok(key));
    }
}

#[test]
fn a_peer_may_not_present_the_gateway_key() {
    let gateway = PrivateKey::generate().public_key();
    let laptop = PrivateKey::generate().public_key();
    assert_eq!(
        PublicKey::parse_peer(&laptop.to_base64(), &gateway),
        Ok(laptop)
    );
    assert_eq!(
        PublicKey::parse_peer(&gateway.to_base64(), &gateway),
        Err(KeyError::GatewayKey)
    );
}

#[test]
fn debug_never_shows_a_private_key() {
    let secret = PrivateKey::generate();
    let shown = format!("{secret:?}");
    assert!(!shown.contains(&secret.to_base64()), "{shown}");
    assert!(shown.contains(&secret.public_key().to_base64()), "{shown}");
}

#[test]
fn serde_writes_and_reads_base64_and_vets_it() {
    let key = PrivateKey::generate().public_key();
    let json = serde_json::to_string(&key).expect("serialize");
    assert_eq!(json, format!("\"{}\"", key.to_base64()));
    assert_eq!(
        serde_json::from_str::<PublicKey>(&json).expect("deserialize"),
        key
    );
    let zero = format!("\"{}\"", encode_base64(&[0; 32]));
    let e = serde_json::from_str::<PublicKey>(&zero).expect_err("all-zero accepted");
    assert!(e.to_string().contains("all-zero"), "{e}");
}

#[test]
fn generated_keys_differ() {
    let a = PrivateKey::generate();
    let b = PrivateKey::generate();
    assert_ne!(a.to_base64(), b.to_base64());
    assert_eq!(a.to_base64().len(), 44);
}
