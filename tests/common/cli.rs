//! The `sesame` binary of this build, run the way an operator runs it: one runner for every test
//! that calls the CLI (`cli::sesame(&["devices", "list"]).config(&path).output()`).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// The `sesame` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sesame");

/// The login recorded for CLI calls (`cli:<login>` in the audit log) unless [`Sesame::user`]
/// says otherwise.
pub const OPERATOR: &str = "admin-dsi";

/// One `sesame` command being prepared: logs off (`RUST_LOG=off`), run by [`OPERATOR`].
pub struct Sesame {
    cmd: Command,
}

/// `sesame ARGS…`
pub fn sesame<S: AsRef<OsStr>>(args: &[S]) -> Sesame {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RUST_LOG", "off")
        .env("USER", OPERATOR)
        .env_remove("SUDO_USER");
    Sesame { cmd }
}

impl Sesame {
    /// `--config PATH`
    pub fn config(mut self, path: impl AsRef<Path>) -> Sesame {
        self.cmd.arg("--config").arg(path.as_ref());
        self
    }

    /// More arguments after those already given.
    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Sesame {
        self.cmd.args(args);
        self
    }

    /// The login the CLI records as the operator (`USER`, no `SUDO_USER`).
    pub fn user(mut self, login: &str) -> Sesame {
        self.cmd.env("USER", login);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Sesame {
        self.cmd.env(key, value);
        self
    }

    /// The command itself (to spawn it, pipe it, or run it elsewhere).
    pub fn command(self) -> Command {
        self.cmd
    }

    /// Runs it to the end, whatever its exit status.
    pub fn output(mut self) -> Output {
        self.cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
    }

    /// Runs it and asserts it succeeded (showing what it printed if not): its stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        let out = self.output();
        assert!(out.status.success(), "sesame failed: {}", both(&out));
        text(&out.stdout)
    }
}

/// Bytes a command printed, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Status, stdout and stderr of a finished command, for assertion messages.
pub fn both(out: &Output) -> String {
    format!("{}\n{}{}", out.status, text(&out.stdout), text(&out.stderr))
}
