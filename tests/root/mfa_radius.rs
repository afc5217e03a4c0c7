//! The RADIUS second factor against a real FreeRADIUS (Debian's package) in network namespaces
//! the test creates: accept, reject, a dead first server falls over to the second, a wrong
//! shared secret is an error (logged), never an accept. The wait per server is above
//! FreeRADIUS's default `reject_delay` (1 s): a refusal comes late on purpose. Needs root.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use crate::common;
use crate::require_root;
use common::netns::{link, Netns, ThreadNetns};
use common::radius::FreeRadius;
use sesame::mfa::radius::{RadiusClient, RadiusError, RadiusSettings, Verdict};

const SECRET: &str = "s3cr3t-partage-academie";
/// The client (Sesame) and the OTP server, on a link of their own.
const CLIENT: &str = "198.18.61.1/24";
const SERVER: &str = "198.18.61.2/24";
const SERVER_ADDR: &str = "198.18.61.2:1812";
/// On the same link, nobody: a dead first server (no answer, not even a refusal).
const DEAD_ADDR: &str = "198.18.61.9:1812";

struct World {
    client: Netns,
    _server_ns: Netns,
    radius: FreeRadius,
}

fn world() -> World {
    let client = Netns::new("rdc");
    let server_ns = Netns::new("rds");
    link(&client, CLIENT, &server_ns, SERVER);
    let radius = FreeRadius::start(
        &server_ns,
        "198.18.61.0/24",
        SECRET,
        &[("mdupont", "314159"), ("achevalier", "271828")],
    );
    World {
        client,
        _server_ns: server_ns,
        radius,
    }
}

fn client(servers: &[&str], secret: &str) -> RadiusClient {
    RadiusClient::new(RadiusSettings {
        servers: servers
            .iter()
            .map(|s| s.parse::<SocketAddr>().unwrap())
            .collect(),
        secret: secret.as_bytes().to_vec(),
        timeout: Duration::from_millis(2500),
    })
}

/// Runs `f` on this thread inside the client's namespace (its sockets live there).
fn inside<T>(ns: &Netns, f: impl std::future::Future<Output = T>) -> T {
    let _in = ThreadNetns::enter(ns);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn radius_accepts_the_right_code_and_rejects_a_wrong_one() {
    require_root!("network namespaces and FreeRADIUS");
    let w = world();
    let c = client(&[SERVER_ADDR], SECRET);
    let (good, bad, other) = inside(&w.client, async {
        (
            c.verify("mdupont", "314159").await.unwrap(),
            c.verify("mdupont", "000000").await.unwrap(),
            c.verify("achevalier", "314159").await.unwrap(),
        )
    });
    assert_eq!(good, Verdict::Accept);
    assert_eq!(bad, Verdict::Reject);
    assert_eq!(other, Verdict::Reject);
    // The server checked our Message-Authenticator (it requires one) and saw the code hidden.
    let log = w.radius.log_text();
    assert!(log.contains("Message-Authenticator"), "{log}");
    assert!(!log.contains("invalid Message-Authenticator"), "{log}");
}

#[test]
fn a_dead_first_server_falls_over_to_the_second() {
    require_root!("network namespaces and FreeRADIUS");
    let w = world();
    let c = client(&[DEAD_ADDR, SERVER_ADDR], SECRET);
    let started = std::time::Instant::now();
    let v = inside(&w.client, c.verify("mdupont", "314159"));
    assert_eq!(v.unwrap(), Verdict::Accept);
    // It waited for the dead one (its timeout), then asked the next.
    assert!(started.elapsed() >= Duration::from_millis(2500));
    // Every server dead: an error, not a refusal and never an accept.
    let c = client(&[DEAD_ADDR], SECRET);
    let e = inside(&w.client, c.verify("mdupont", "314159")).unwrap_err();
    assert!(matches!(e, RadiusError::AllFailed { .. }), "{e}");
}

#[test]
fn a_wrong_shared_secret_is_an_error_never_an_accept() {
    require_root!("network namespaces and FreeRADIUS");
    let w = world();
    let c = client(&[SERVER_ADDR], "not-the-shared-secret");
    let r = inside(&w.client, c.verify("mdupont", "314159"));
    let e = r.unwrap_err();
    assert!(matches!(e, RadiusError::AllFailed { .. }), "{e}");
    // FreeRADIUS drops a request whose Message-Authenticator does not verify with its secret:
    // the client sees no answer, and says which server failed.
    assert!(e.to_string().contains("198.18.61.2"), "{e}");
    let log = w.radius.log_text();
    assert!(
        log.contains("Shared secret is incorrect") || log.contains("invalid Message-Authenticator"),
        "{log}"
    );
}
