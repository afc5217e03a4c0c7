use super::*;

const SECRET: &[u8] = b"s3cr3t-partage";
const SERVER: ([u8; 4], u16) = ([198, 18, 0, 10], 1812);

fn server() -> SocketAddr {
    SERVER.into()
}

/// An answer to `request` as a server with `secret` builds it (the `radius` crate's encoder
/// computes the Response Authenticator), with a Message-Authenticator when `with_ma`.
fn answer(request: &[u8], secret: &[u8], code: Code, with_ma: bool) -> Vec<u8> {
    let req = Packet::decode(request, secret).unwrap();
    let mut resp = req.make_response_packet(code);
    if with_ma {
        rfc2869::add_message_authenticator(&mut resp, &[0u8; 16]);
    }
    let mut bytes = resp.encode().unwrap();
    if with_ma {
        // RFC 3579: the HMAC over the answer with the request's authenticator, then the
        // Response Authenticator over the result.
        let at = message_authenticator_at(&bytes).unwrap();
        let mut copy = bytes.clone();
        copy[4..HEADER].copy_from_slice(&request[4..HEADER]);
        bytes[at..at + 16].copy_from_slice(&hmac_md5(secret, &copy));
        let mut for_auth = bytes.clone();
        for_auth[4..HEADER].copy_from_slice(&request[4..HEADER]);
        for_auth.extend_from_slice(secret);
        let digest: [u8; 16] = <Md5 as md5::Digest>::digest(&for_auth).into();
        bytes[4..HEADER].copy_from_slice(&digest);
    }
    bytes
}

#[test]
fn the_request_carries_a_valid_message_authenticator_and_the_hidden_code() {
    let req = access_request(SECRET, "mdupont", "123456").unwrap();
    let at = message_authenticator_at(&req).unwrap();
    let mut zeroed = req.clone();
    zeroed[at..at + 16].fill(0);
    assert_eq!(hmac_md5(SECRET, &zeroed), req[at..at + 16]);
    let decoded = Packet::decode(&req, SECRET).unwrap();
    assert_eq!(
        rfc2865::lookup_user_name(&decoded).unwrap().unwrap(),
        "mdupont"
    );
    assert_eq!(
        rfc2865::lookup_user_password(&decoded).unwrap().unwrap(),
        b"123456"
    );
    // The code never travels in clear.
    assert!(!req.windows(6).any(|w| w == b"123456"));
}

#[test]
fn accept_and_reject_are_read_from_authentic_answers() {
    let req = access_request(SECRET, "mdupont", "123456").unwrap();
    for with_ma in [false, true] {
        let ok = answer(&req, SECRET, Code::AccessAccept, with_ma);
        assert_eq!(
            check_answer(server(), SECRET, &req, &ok).unwrap(),
            Verdict::Accept
        );
        let no = answer(&req, SECRET, Code::AccessReject, with_ma);
        assert_eq!(
            check_answer(server(), SECRET, &req, &no).unwrap(),
            Verdict::Reject
        );
    }
}

#[test]
fn an_answer_signed_with_another_secret_is_an_error_never_an_accept() {
    let req = access_request(SECRET, "mdupont", "123456").unwrap();
    let forged = answer(&req, b"another-secret", Code::AccessAccept, false);
    assert!(matches!(
        check_answer(server(), SECRET, &req, &forged),
        Err(RadiusError::BadAuthenticator { .. })
    ));
    // A right Response Authenticator with a wrong Message-Authenticator is refused too.
    let mut ok = answer(&req, SECRET, Code::AccessAccept, true);
    let at = message_authenticator_at(&ok).unwrap();
    ok[at] ^= 1;
    let mut for_auth = ok.clone();
    for_auth[4..HEADER].copy_from_slice(&req[4..HEADER]);
    for_auth.extend_from_slice(SECRET);
    let digest: [u8; 16] = <Md5 as md5::Digest>::digest(&for_auth).into();
    ok[4..HEADER].copy_from_slice(&digest);
    assert!(matches!(
        check_answer(server(), SECRET, &req, &ok),
        Err(RadiusError::BadMessageAuthenticator { .. })
    ));
    // Truncated or lying about its length: refused.
    let short = &answer(&req, SECRET, Code::AccessAccept, false)[..HEADER];
    let mut lying = short.to_vec();
    lying[3] = 200;
    assert!(check_answer(server(), SECRET, &req, &lying).is_err());
}

#[test]
fn the_secret_file_must_be_private_and_not_empty() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("radius.secret");
    std::fs::write(&path, "s3cr3t-partage\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(read_secret(&path), Err(SecretError::Mode(_))));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read_secret(&path).unwrap(), SECRET);
    std::fs::write(&path, "\n").unwrap();
    assert!(matches!(read_secret(&path), Err(SecretError::Empty { .. })));
}
