//! A private FreeRADIUS (Debian's `freeradius`) in a test's network namespace: the distribution's configuration copied to a temp dir, one PAP site, one client network with its shared secret, users and their one-time passwords.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::netns::{wait_for, Netns, Proc};

/// The distribution's configuration, copied then trimmed for each server.
const DIST_CONFIG: &str = "/etc/freeradius/3.0";

pub struct FreeRadius {
    pub proc: Proc,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A site that checks User-Password against the `files` users (PAP), on every address of the
/// namespace, port 1812.
const SITE: &str = "server default {
	listen {
		type = auth
		ipaddr = *
		port = 1812
	}
	authorize {
		files
		pap
	}
	authenticate {
		Auth-Type PAP {
			pap
		}
	}
	post-auth {
	}
}
";

fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::write(path, f(text)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

impl FreeRadius {
    /// Starts `freeradius -X` in `ns`, answering clients of `client_net` that share `secret`
    /// (Message-Authenticator required), knowing `users` (name, current one-time password).
    pub fn start(ns: &Netns, client_net: &str, secret: &str, users: &[(&str, &str)]) -> FreeRadius {
        assert!(
            Path::new(DIST_CONFIG).is_dir(),
            "{DIST_CONFIG} missing: install the freeradius package (packaging/install-deps.sh test)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let raddb = dir.path().join("raddb");
        let cp = std::process::Command::new("cp")
            .args(["-a", DIST_CONFIG, &raddb.to_string_lossy()])
            .status()
            .expect("cp");
        assert!(cp.success(), "cannot copy {DIST_CONFIG}");
        // EAP needs certificates and the inner tunnel EAP: neither is used here.
        for f in [
            "mods-enabled/eap",
            "sites-enabled/inner-tunnel",
            "sites-enabled/default",
        ] {
            let _ = std::fs::remove_file(raddb.join(f));
        }
        std::fs::write(raddb.join("sites-enabled/default"), SITE).expect("site");
        let run = raddb.join("run");
        let logdir = raddb.join("log");
        std::fs::create_dir_all(&run).expect("run dir");
        std::fs::create_dir_all(&logdir).expect("log dir");
        edit(&raddb.join("radiusd.conf"), |t| {
            t.lines()
                .map(|l| match l.trim_start() {
                    // Runs as the test's user (the copy belongs to it).
                    s if s.starts_with("user = ") || s.starts_with("group = ") => String::new(),
                    s if s.starts_with("run_dir = ") => format!("run_dir = {}", run.display()),
                    s if s.starts_with("logdir = ") => format!("logdir = {}", logdir.display()),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        std::fs::write(
            raddb.join("clients.conf"),
            format!(
                "client sesame {{\n\tipaddr = {client_net}\n\tsecret = {secret}\n\trequire_message_authenticator = yes\n}}\n"
            ),
        )
        .expect("clients.conf");
        let users: String = users
            .iter()
            .map(|(u, p)| format!("{u} Cleartext-Password := \"{p}\"\n"))
            .collect();
        std::fs::write(raddb.join("mods-config/files/authorize"), users).expect("users");
        let log = dir.path().join("freeradius.log");
        let proc = ns.spawn(
            "freeradius",
            &["-X", "-d", &raddb.to_string_lossy()],
            Some(&log),
        );
        let ready = wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Ready to process requests"))
        });
        assert!(
            ready,
            "freeradius did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        FreeRadius {
            proc,
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
