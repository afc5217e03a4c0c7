//! The RADIUS second factor: a one-time password checked by the académie's OTP server (Access-Request with User-Name, User-Password and Message-Authenticator; servers tried in order).
//!
//! The `radius` crate builds and reads the packets: attributes, the hidden User-Password
//! (RFC 2865 §5.2) and the Response Authenticator check. Written here, and why: that crate only
//! carries the Message-Authenticator attribute, it does not compute or check it (RFC 3579
//! §3.2: HMAC-MD5 over the whole packet, keyed with the shared secret; servers patched for
//! BlastRADIUS require it), and its client returns neither the raw answer (needed to check
//! both authenticators) nor checks the answer's identifier, nor tries a second server. So: the
//! HMAC-MD5 with RustCrypto's `hmac` + `md-5` (the `hmac` the peer cache already uses), and a
//! small UDP exchange on tokio. A wrong shared secret shows as a wrong authenticator in the
//! answer: an error (logged, next server), never an accept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::Md5;
use radius::core::code::Code;
use radius::core::packet::{Packet, PacketError};
use radius::core::{rfc2865, rfc2869};
use tokio::net::UdpSocket;

type HmacMd5 = Hmac<Md5>;

/// RADIUS header: code, identifier, length (2), authenticator (16).
const HEADER: usize = 20;
/// Type of the Message-Authenticator attribute (RFC 3579 §3.2).
const MESSAGE_AUTHENTICATOR: u8 = 80;
/// Largest RADIUS packet (RFC 2865 §3).
const MAX_PACKET: usize = 4096;
/// `[mfa.radius] timeout` when not given: per server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The NAS-Identifier Sesame sends (the server's clients.conf may match on it).
pub const NAS_IDENTIFIER: &str = "sesame";

/// `[mfa.radius]`: the servers in the order tried, the shared secret, the wait per server.
#[derive(Clone)]
pub struct RadiusSettings {
    pub servers: Vec<SocketAddr>,
    pub secret: Vec<u8>,
    pub timeout: Duration,
}

impl std::fmt::Debug for RadiusSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadiusSettings")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What the OTP server said of a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Access-Reject (a wrong or used code), or an Access-Challenge Sesame cannot answer.
    Reject,
}

/// Why no server gave a verdict (every one is logged; none is ever an accept).
#[derive(Debug, thiserror::Error)]
pub enum RadiusError {
    #[error("RADIUS {server}: no answer within {timeout:?}")]
    Timeout {
        server: SocketAddr,
        timeout: Duration,
    },
    #[error("RADIUS {server}: {source}")]
    Io {
        server: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("RADIUS {server}: the answer's authenticator is wrong: the shared secret differs from the server's (compare [mfa.radius] secret_file with the server's clients.conf)")]
    BadAuthenticator { server: SocketAddr },
    #[error("RADIUS {server}: the answer's Message-Authenticator is wrong: the shared secret differs from the server's")]
    BadMessageAuthenticator { server: SocketAddr },
    #[error("RADIUS {server}: unexpected answer (code {code})")]
    UnexpectedAnswer { server: SocketAddr, code: u8 },
    #[error("RADIUS: cannot build the request: {0}")]
    Encode(#[source] PacketError),
    #[error("RADIUS: the user name or code is too long for a RADIUS attribute")]
    TooLong(#[source] radius::core::avp::AVPError),
    #[error("no RADIUS server is configured")]
    NoServer,
    #[error("no RADIUS server gave an answer; the last one: {last}")]
    AllFailed {
        #[source]
        last: Box<RadiusError>,
    },
}

/// Why `[mfa.radius] secret_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Mode(#[from] crate::secret_file::SecretFileError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty: write the shared secret the RADIUS server knows this client by")]
    Empty { path: PathBuf },
}

/// Reads the shared secret (one line; the trailing newline is not part of it); the file must
/// be readable by its owner only (0600).
pub fn read_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    crate::secret_file::check(path, "[mfa.radius] secret_file")?;
    let text = std::fs::read(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text
        .strip_suffix(b"\n")
        .map(|s| s.strip_suffix(b"\r").unwrap_or(s))
        .unwrap_or(&text)
        .to_vec();
    if secret.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret)
}

/// Checks one-time passwords against the configured RADIUS servers.
#[derive(Debug, Clone)]
pub struct RadiusClient {
    settings: RadiusSettings,
}

impl RadiusClient {
    pub fn new(settings: RadiusSettings) -> RadiusClient {
        RadiusClient { settings }
    }

    /// Asks the servers in order whether `code` is `username`'s current one-time password: the
    /// first answer that is authentic decides. A server that does not answer in time, or whose
    /// answer is not authentic (another shared secret), is logged and the next one is asked.
    pub async fn verify(&self, username: &str, code: &str) -> Result<Verdict, RadiusError> {
        let mut last = RadiusError::NoServer;
        for &server in &self.settings.servers {
            match self.ask(server, username, code).await {
                Ok(verdict) => return Ok(verdict),
                Err(e @ (RadiusError::Encode(_) | RadiusError::TooLong(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, %server, "RADIUS server failed; trying the next one");
                    last = e;
                }
            }
        }
        match last {
            RadiusError::NoServer => Err(RadiusError::NoServer),
            last => Err(RadiusError::AllFailed {
                last: Box::new(last),
            }),
        }
    }

    /// One Access-Request to one server.
    async fn ask(
        &self,
        server: SocketAddr,
        username: &str,
        code: &str,
    ) -> Result<Verdict, RadiusError> {
        let secret = &self.settings.secret;
        let request = access_request(secret, username, code)?;
        let io = |source| RadiusError::Io { server, source };
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(server).await.map_err(io)?;
        socket.send(&request).await.map_err(io)?;
        let timeout = self.settings.timeout;
        let mut buf = vec![0u8; MAX_PACKET];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => return Err(RadiusError::Timeout { server, timeout }),
                // A refused port (ICMP unreachable) is a dead server too.
                Ok(r) => r.map_err(io)?,
            };
            let answer = &buf[..n];
            // An answer to another request (a late one from before) is not ours: keep waiting.
            if n < HEADER || answer[1] != request[1] {
                continue;
            }
            return check_answer(server, secret, &request, answer);
        }
    }
}

/// The Access-Request: User-Name, User-Password (hidden with the secret), NAS-Identifier and
/// Message-Authenticator (computed over the encoded packet).
fn access_request(secret: &[u8], username: &str, code: &str) -> Result<Vec<u8>, RadiusError> {
    let mut packet = Packet::new(Code::AccessRequest, secret);
    rfc2865::add_user_name(&mut packet, username);
    rfc2865::add_user_password(&mut packet, code.as_bytes()).map_err(RadiusError::TooLong)?;
    rfc2865::add_nas_identifier(&mut packet, NAS_IDENTIFIER);
    rfc2869::add_message_authenticator(&mut packet, &[0u8; 16]);
    let mut bytes = packet.encode().map_err(RadiusError::Encode)?;
    let mac = hmac_md5(secret, &bytes);
    if let Some(at) = message_authenticator_at(&bytes) {
        bytes[at..at + 16].copy_from_slice(&mac);
    }
    Ok(bytes)
}

/// Where the value of the (first) Message-Authenticator attribute starts, if there is one.
fn message_authenticator_at(packet: &[u8]) -> Option<usize> {
    let mut at = HEADER;
    while at + 2 <= packet.len() {
        let (kind, len) = (packet[at], usize::from(packet[at + 1]));
        if len < 2 || at + len > packet.len() {
            return None;
        }
        if kind == MESSAGE_AUTHENTICATOR && len == 18 {
            return Some(at + 2);
        }
        at += len;
    }
    None
}

fn hmac_md5(secret: &[u8], data: &[u8]) -> [u8; 16] {
    #[allow(clippy::expect_used)] // HMAC takes keys of any length.
    let mut mac = HmacMd5::new_from_slice(secret).expect("HMAC key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The verdict of an answer to `request`, once both its authenticators are right.
fn check_answer(
    server: SocketAddr,
    secret: &[u8],
    request: &[u8],
    answer: &[u8],
) -> Result<Verdict, RadiusError> {
    let declared = usize::from(u16::from_be_bytes([answer[2], answer[3]]));
    if declared < HEADER || declared > answer.len() {
        return Err(RadiusError::UnexpectedAnswer {
            server,
            code: answer[0],
        });
    }
    let answer = &answer[..declared];
    if !Packet::is_authentic_response(answer, request, secret) {
        return Err(RadiusError::BadAuthenticator { server });
    }
    // RFC 3579 §3.2: in an answer, the HMAC covers the packet with the request's authenticator
    // in place of its own and the attribute's value zeroed.
    if let Some(at) = message_authenticator_at(answer) {
        let mut copy = answer.to_vec();
        copy[4..HEADER].copy_from_slice(&request[4..HEADER]);
        copy[at..at + 16].fill(0);
        let want = hmac_md5(secret, &copy);
        if !constant_time_eq(&want, &answer[at..at + 16]) {
            return Err(RadiusError::BadMessageAuthenticator { server });
        }
    }
    match Code::from(answer[0]) {
        Code::AccessAccept => Ok(Verdict::Accept),
        Code::AccessReject => Ok(Verdict::Reject),
        Code::AccessChallenge => {
            tracing::warn!(%server, "RADIUS server asked a challenge: Sesame sends the code alone; counted as a refusal");
            Ok(Verdict::Reject)
        }
        _ => Err(RadiusError::UnexpectedAnswer {
            server,
            code: answer[0],
        }),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `[mfa] provider = "radius"`: the académie's server knows every user (no registration with
/// Sesame); no verdict from any server is "unavailable", never an accept.
impl super::Provider for RadiusClient {
    fn kind(&self) -> &'static str {
        "radius"
    }

    fn needs_registration(&self) -> bool {
        false
    }

    fn check<'a>(
        &'a self,
        username: &'a str,
        code: &'a str,
        _factor: Option<&'a crate::store::Factor>,
    ) -> super::CheckFuture<'a> {
        // The server spends its own codes: nothing is left for the caller to spend.
        Box::pin(async move {
            match RadiusClient::verify(self, username, code).await {
                Ok(Verdict::Accept) => Ok(super::Check::Good { step: None }),
                Ok(Verdict::Reject) => Ok(super::Check::Invalid),
                Err(e) => {
                    tracing::error!(error = %e, "RADIUS second factor unavailable");
                    Err(super::ProviderError::Unavailable {
                        what: "radius".into(),
                        source: Box::new(e),
                    })
                }
            }
        })
    }
}

/// The provider `[mfa.radius]` describes, its shared secret read now (0600).
pub fn from_config(config: &crate::config::RadiusConfig) -> Result<RadiusClient, SecretError> {
    Ok(RadiusClient::new(RadiusSettings {
        servers: config.servers.clone(),
        secret: read_secret(&config.secret_file)?,
        timeout: config.timeout,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "radius_tests.rs"]
mod tests;
