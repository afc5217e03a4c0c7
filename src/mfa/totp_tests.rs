#![allow(clippy::unwrap_used)]

use super::*;

/// RFC 6238 appendix B, SHA-1 (secret "12345678901234567890"), truncated to the 6 digits
/// every authenticator shows.
#[test]
fn rfc6238_sha1_vectors() {
    let secret = b"12345678901234567890";
    for (t, code) in [
        (59u64, "287082"),
        (1_111_111_109, "081804"),
        (1_111_111_111, "050471"),
        (1_234_567_890, "005924"),
        (2_000_000_000, "279037"),
        (20_000_000_000, "353130"),
    ] {
        assert_eq!(code_at(secret, t), code, "t = {t}");
    }
}

#[test]
fn one_step_either_side_is_accepted_three_steps_back_is_not() {
    let secret = generate_secret();
    let now_s: u64 = 1_800_000_015;
    let now_ms = i64::try_from(now_s * 1000).unwrap();
    let step = i64::try_from(now_s / STEP_SECS).unwrap();
    assert_eq!(check(&secret, &code_at(&secret, now_s), now_ms), Some(step));
    assert_eq!(
        check(&secret, &code_at(&secret, now_s - 30), now_ms),
        Some(step - 1)
    );
    assert_eq!(
        check(&secret, &code_at(&secret, now_s + 30), now_ms),
        Some(step + 1)
    );
    // A code read 90 s ago is three steps old: refused.
    assert_eq!(check(&secret, &code_at(&secret, now_s - 90), now_ms), None);
    assert_eq!(check(&secret, "12345", now_ms), None);
    assert_eq!(check(&secret, "abcdef", now_ms), None);
    let spaced = code_at(&secret, now_s);
    let spaced = format!("{} {}", &spaced[..3], &spaced[3..]);
    assert_eq!(check(&secret, &spaced, now_ms), Some(step));
}

#[test]
fn otpauth_uri_names_the_issuer_and_user_and_carries_the_secret() {
    let secret = generate_secret();
    let uri = otpauth_uri(&secret, "alice");
    assert!(uri.starts_with("otpauth://totp/Sesame:alice?"), "{uri}");
    assert!(
        uri.contains(&format!("secret={}", base32(&secret))),
        "{uri}"
    );
    assert!(uri.contains("issuer=Sesame"), "{uri}");
    let svg = crate::mfa::qr::svg(&uri);
    assert!(svg.contains("<svg"), "{svg}");
}

#[tokio::test]
async fn provider_accepts_a_step_once_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let clock = Arc::new(crate::time::ManualClock::new(1_800_000_015_000));
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_clock(clock.clone());
    let key = Arc::new(SecretKey::from_bytes([1; 32]));
    let secret = generate_secret();
    store
        .mfa_begin_registration("alice", "totp", &key.seal("alice", &secret).unwrap())
        .await
        .unwrap();
    let provider = TotpProvider::new(store.clone(), key.clone());
    // What a route does with a code: the provider's check, then the step spent once.
    let verify = |user: &'static str, code: String| {
        let (provider, store) = (&provider, &store);
        async move {
            match provider.check(user, &code, None).await.unwrap() {
                Check::Good { step: Some(step) } => {
                    store.mfa_accept_step(user, step).await.unwrap()
                }
                _ => false,
            }
        }
    };
    let now_s = 1_800_000_015;
    let code = code_at(&secret, now_s);
    // Pending, not confirmed: no factor yet.
    assert!(!verify("alice", code.clone()).await);
    store
        .mfa_confirm("alice", None, i64::try_from(now_s / 30).unwrap() - 1, &[])
        .await
        .unwrap();
    assert!(verify("alice", code.clone()).await);
    assert!(
        !verify("alice", code.clone()).await,
        "a replayed code is refused"
    );
    // The previous step's code is older than the spent one: refused too.
    let previous = code_at(&secret, now_s - 30);
    assert!(!verify("alice", previous.clone()).await);
    clock.advance(std::time::Duration::from_secs(30));
    let next = code_at(&secret, now_s + 30);
    assert!(verify("alice", next.clone()).await);
    assert!(!verify("bob", next.clone()).await);
}
