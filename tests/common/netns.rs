//! Network namespace fixtures: namespaces, veth links, processes inside them; all removed on Drop.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call (fits interface names: ≤ 15 chars).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "name {name} too long for an interface");
    name
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted (with every process in it killed) on Drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS…`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace and returns its output (whatever its status).
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }

    pub fn exec_ok(&self, program: &str, args: &[&str]) -> Output {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "{program} {} in {} failed: {}{}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Starts a long-running process in the namespace; it is killed with the namespace
    /// or by the returned guard.
    pub fn spawn(&self, program: &str, args: &[&str], log: Option<&Path>) -> Proc {
        let mut c = self.command(program);
        c.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
        match log {
            Some(p) => {
                let f = std::fs::File::create(p).expect("log file");
                let f2 = f.try_clone().expect("log file");
                c.stdout(f).stderr(f2);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        Proc {
            child: Some(
                c.spawn()
                    .unwrap_or_else(|e| panic!("cannot start {program}: {e}")),
            ),
        }
    }

    /// A TCP connect from inside the namespace, with a timeout: true if it connected.
    pub fn tcp_connects(&self, ip: &str, port: u16, timeout_secs: u32) -> bool {
        let script = format!("exec 3<>/dev/tcp/{ip}/{port}");
        self.exec(
            "timeout",
            &[&timeout_secs.to_string(), "bash", "-c", &script],
        )
        .status
        .success()
    }

    /// `ping -c COUNT -W 1 IP` from inside: true if any reply came back.
    pub fn pings(&self, ip: &str, count: u32) -> bool {
        self.exec(
            "ping",
            &[
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-W",
                "1",
                "-i",
                "0.2",
                ip,
            ],
        )
        .status
        .success()
    }

    fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill(2) on pids that live in our own test namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into a namespace (so slapd, PostgreSQL, curl and every child it
/// starts live there); back to the thread's original namespace on Drop.
pub struct ThreadNetns {
    orig: File,
}

impl ThreadNetns {
    pub fn enter(ns: &Netns) -> ThreadNetns {
        let orig = File::open("/proc/thread-self/ns/net").expect("own netns");
        let target = File::open(format!("/var/run/netns/{}", ns.name)).expect("target netns");
        // SAFETY: setns(2) on valid namespace fds, affecting only this test's thread.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        ThreadNetns { orig }
    }
}

impl Drop for ThreadNetns {
    fn drop(&mut self) {
        // SAFETY: as above, back to the namespace this thread started in.
        unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// A veth pair with one end in each namespace, addressed and up.
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> (String, String) {
    let an = unique("va");
    let bn = unique("vb");
    run(
        "ip",
        &[
            "link", "add", &an, "netns", &a.name, "type", "veth", "peer", "name", &bn, "netns",
            &b.name,
        ],
    );
    a.ip(&["addr", "add", a_addr, "dev", &an]);
    b.ip(&["addr", "add", b_addr, "dev", &bn]);
    a.ip(&["link", "set", &an, "up"]);
    b.ip(&["link", "set", &bn, "up"]);
    (an, bn)
}

/// A child process killed (and reaped) on Drop.
pub struct Proc {
    pub child: Option<Child>,
}

impl Proc {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (SIGHUP: reload) and returns at once.
    pub fn signal(&self, sig: i32) {
        let c = self.child.as_ref().expect("process running");
        // SAFETY: kill(2) on our own child (`ip netns exec` execs the program: same pid).
        unsafe { libc::kill(c.id() as i32, sig) };
    }

    /// Sends a signal and waits up to `timeout` for the exit; returns the exit status.
    pub fn signal_and_wait(
        &mut self,
        sig: i32,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        // `ip netns exec` execs the program: the child pid is the program's.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, sig) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
