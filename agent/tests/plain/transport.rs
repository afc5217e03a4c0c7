//! Enrolment errors that happen before the portal answers: unreachable portal, invalid TLS
//! certificate (plain HTTP behind https://, self-signed certificate), and a private CA that works.
//! Loopback only; needs `openssl` and `python3`.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn agent_enrol(portal: &str, extra: &[&str], dir: &Path, lang: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sesame-agent"))
        .args([
            "enrol",
            "--portal",
            portal,
            "--code",
            "ABCD-EFGH",
            "--user",
            "mdupont",
            "--password-stdin",
            "--dir",
        ])
        .arg(dir)
        .args(extra)
        .env("LANG", lang)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent may refuse its arguments (a bad portal address) and exit before reading the
    // password: a broken pipe here is that early exit, judged by the output below.
    if let Err(e) = child.stdin.take().unwrap().write_all(b"Marie-Paie-2026\n") {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn unreachable_portal_says_check_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let port = closed_port();
    let out = agent_enrol(
        &format!("http://127.0.0.1:{port}"),
        &[],
        &dir,
        "en_GB.UTF-8",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains(&format!("Cannot reach the portal http://127.0.0.1:{port}")),
        "{}",
        text(&out)
    );
    let out = agent_enrol(
        &format!("http://127.0.0.1:{port}"),
        &[],
        &dir,
        "fr_FR.UTF-8",
    );
    assert!(
        text(&out).contains("Impossible de joindre le portail"),
        "{}",
        text(&out)
    );
    assert!(!dir.exists(), "nothing may be written on failure");
}

#[test]
fn https_to_a_plain_http_listener_is_a_tls_error_without_fallback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A plain HTTP server: answers anything with an HTTP response; counts connections.
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(8) {
            if let Ok((mut c, _)) = listener.accept() {
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                seen.push(buf[..n.min(3)].to_vec());
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = agent_enrol(
        &format!("https://127.0.0.1:{port}"),
        &[],
        &tmp.path().join("a"),
        "en_GB.UTF-8",
    );
    assert!(
        text(&out).contains("is not valid: the connection was cut"),
        "{}",
        text(&out)
    );
    let seen = server.join().unwrap();
    // Every connection began with a TLS handshake record (0x16): never a plain-HTTP retry.
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|first| first.first() == Some(&0x16)),
        "{seen:?}"
    );
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, leaf.pem, leaf.key).
fn private_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "1",
        "-subj",
        "/CN=Sesame test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&ca, dir);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
        dir,
    );
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// A small HTTPS server (Python's ssl) answering every POST with an API error body.
const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('content-length', 0)))
        b = b'{"error":{"code":"invalid_code","message":"x"}}'
        self.send_response(404); self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

fn https_server(cert: &Path, key: &Path) -> (Server, u16) {
    let mut child = Command::new("python3")
        .args(["-c", HTTPS_SERVER])
        .arg(cert)
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("https server said {line:?}"));
    (Server(child), port)
}

#[test]
fn unknown_certificate_authority_is_refused_unless_its_ca_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(tmp.path());
    let (_server, port) = https_server(&cert, &key);
    let url = format!("https://127.0.0.1:{port}");
    let out = agent_enrol(&url, &[], &tmp.path().join("a"), "en_GB.UTF-8");
    assert!(
        text(&out).contains(&format!("The certificate of the portal {url} is not valid")),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("--ca-file"), "{}", text(&out));
    let out = agent_enrol(&url, &[], &tmp.path().join("a"), "fr_FR.UTF-8");
    assert!(text(&out).contains("n'est pas valide"), "{}", text(&out));

    // With the CA given, TLS succeeds and the server's API error comes through.
    let out = agent_enrol(
        &url,
        &["--ca-file", ca.to_str().unwrap()],
        &tmp.path().join("a"),
        "en_GB.UTF-8",
    );
    assert!(
        text(&out).contains("Unknown enrolment code"),
        "{}",
        text(&out)
    );
    assert!(!tmp.path().join("a").exists());
}

#[test]
fn bad_portal_address_and_empty_password() {
    let tmp = tempfile::tempdir().unwrap();
    let out = agent_enrol(
        "ftp://vpn.example.org",
        &[],
        &tmp.path().join("a"),
        "en_GB.UTF-8",
    );
    assert!(
        text(&out).contains("Invalid portal address"),
        "{}",
        text(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sesame-agent"))
        .args([
            "enrol",
            "--portal",
            "http://127.0.0.1:9",
            "--code",
            "X",
            "--user",
            "u",
            "--password-stdin",
            "--dir",
        ])
        .arg(tmp.path().join("a"))
        .env("LANG", "en")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&out).contains("No password was typed"),
        "{}",
        text(&out)
    );
}

#[test]
fn commands_before_enrolment_say_to_enrol_first() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in ["status", "rotate", "up"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sesame-agent"))
            .args([cmd, "--dir"])
            .arg(tmp.path())
            .env("LANG", "en")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(
            text(&out).contains("not enrolled yet"),
            "{cmd}: {}",
            text(&out)
        );
    }
}

/// `enrol` run in a network namespace of its own with no interface up (`unshare -n`): whatever
/// it tries, no packet leaves this machine (the test address is never reached).
fn enrol_isolated(portal: &str, extra: &[&str], dir: &Path, lang: &str) -> Output {
    Command::new("unshare")
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_sesame-agent"))
        .args([
            "enrol",
            "--portal",
            portal,
            "--code",
            "ABCD-EFGH",
            "--user",
            "mdupont",
            "--password-stdin",
            "--dir",
        ])
        .arg(dir)
        .args(extra)
        .env("LANG", lang)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn plain_http_outside_loopback_is_refused_in_french_first_unless_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let portal = "http://198.18.0.1:9";
    let out = enrol_isolated(portal, &[], &dir, "fr_FR.UTF-8");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    let fr = t
        .find(&format!(
            "Refusé : le portail {portal} est en HTTP non chiffré"
        ))
        .unwrap_or_else(|| panic!("{t}"));
    let en = t
        .find(&format!(
            "refused: {portal} is plain HTTP outside this machine"
        ))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(fr < en, "French first: {t}");
    assert!(t.contains("ajoutez --insecure"), "{t}");
    assert!(t.contains("https://"), "{t}");
    // Refused before asking for the password (stdin is empty: that would say so instead).
    assert!(!t.contains("mot de passe n'a été saisi"), "{t}");
    assert!(!dir.join("agent.toml").exists());

    let out = enrol_isolated(portal, &[], &dir, "en_GB.UTF-8");
    assert!(
        text(&out).contains(&format!(
            "Refused: the portal {portal} is unencrypted HTTP outside this machine"
        )),
        "{}",
        text(&out)
    );

    // With --insecure the address is accepted: the agent goes on (here to the password, which
    // standard input does not give).
    let out = enrol_isolated(portal, &["--insecure"], &dir, "en_GB.UTF-8");
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out).contains("Refused"), "{}", text(&out));
    assert!(
        text(&out).contains("No password was typed"),
        "{}",
        text(&out)
    );
}
