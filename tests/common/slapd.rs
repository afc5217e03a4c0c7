//! Test fixture: a real OpenLDAP `slapd` in a temp dir, seeded with `config/ldap/academie.ldif`.
//!
//! `Slapd::start()` builds a fresh cn=config (mdb, memberof, ppolicy, ACLs that hide everything
//! from anonymous clients), starts slapd on a free loopback port, waits until it answers and
//! loads the seed with `ldapadd` so the overlays see every entry. Helpers change the directory
//! the way an administrator would (group membership, lock, delete) and simulate outages
//! (`stop`/`start_again`: port closed; `pause`/`resume`: a hung server). Drop kills slapd and
//! removes the temp dir. Every helper takes `&self`, so the fixture can sit in an `Arc`.
//!
//! ```ignore
//! use common::slapd::{password_of, Slapd};
//! let ldap = Slapd::start();
//! let dir = sesame::directory::LdapDirectory::new(&ldap.directory_config())?;
//! dir.authenticate("mdupont", password_of("mdupont")).await?;
//! ldap.remove_from_group("mdupont", "gestionnaires-paie"); // loses paie and the VPN group
//! ldap.stop();                                             // now Unavailable
//! ```
#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sesame::config::{DirectoryConfig, DirectoryKind};

pub const SUFFIX: &str = "dc=academie,dc=test";
pub const PEOPLE: &str = "ou=people,dc=academie,dc=test";
pub const GROUPS: &str = "ou=groups,dc=academie,dc=test";
/// slapd's rootdn: only the fixture uses it, to play the directory administrator.
pub const ADMIN_DN: &str = "cn=admin,dc=academie,dc=test";
pub const ADMIN_PASSWORD: &str = "admin-test";
/// Sesame's service account (the `bind_dn` of the config).
pub const SERVICE_DN: &str = "cn=sesame,ou=services,dc=academie,dc=test";
pub const SERVICE_PASSWORD: &str = "sesame-service-2026";

/// Seeded accounts: (uid, password). See the header of config/ldap/academie.ldif.
pub const USERS: &[(&str, &str)] = &[
    ("mdupont", "Marie-Paie-2026"),
    ("fnoel", "Francoise-Paie-2026"),
    ("jmartin", "Jean-Dsden-2026"),
    ("sbernard", "Sophie-Rh-2026"),
    ("hlefevre", "Helene-Rh-2026"),
    ("tleroux", "Thomas-Dsi-2026"),
    ("cgarnier", "Claire-Audit-2026"),
    ("lpetit", "Luc-Audit-2026"),
    ("pdurand", "Paul-Prof-2026"),
    ("rmoreau", "Robert-Off-2026"),
];

/// The seeded password of `uid` (panics on an unknown uid: a typo in a test).
pub fn password_of(uid: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == uid)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("no seeded user {uid:?}"))
}

/// DN of a seeded user (hlefevre's DN is cn-based, with an escaped comma).
pub fn user_dn(uid: &str) -> String {
    match uid {
        // slapd returns the comma hex-escaped, as it stores it.
        "hlefevre" => format!("cn=Lefèvre\\2C Hélène,{PEOPLE}"),
        other => format!("uid={other},{PEOPLE}"),
    }
}

/// DN of a group by its cn, e.g. `group_dn("gestionnaires-paie")`.
pub fn group_dn(cn: &str) -> String {
    format!("cn={cn},{GROUPS}")
}

/// The seed file, relative to the crate root.
pub fn seed_ldif() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ldap/academie.ldif")
}

/// Test CA material for the ldaps:// listener.
struct Tls {
    port: u16,
    ca_file: PathBuf,
    wrong_ca_file: PathBuf,
}

pub struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    tls: Option<Tls>,
    child: Mutex<Option<Child>>,
}

impl Slapd {
    /// slapd on ldap://127.0.0.1:PORT, seeded.
    pub fn start() -> Slapd {
        Self::start_inner(false)
    }

    /// slapd with `olcLimits` for Sesame's service account (e.g. `"size=5"`: its searches
    /// return at most 5 entries, paged ones included, as an administrator's limits would cut
    /// them), seeded.
    pub fn start_with_service_limits(limits: &str) -> Slapd {
        Self::start_inner_with(false, Some(limits))
    }

    /// Same, plus an ldaps:// listener (and StartTLS on ldap://) with a certificate for
    /// 127.0.0.1 signed by a fresh test CA (`ca_file()`); `wrong_ca_file()` is another CA.
    pub fn start_with_tls() -> Slapd {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> Slapd {
        Self::start_inner_with(tls, None)
    }

    fn start_inner_with(tls: bool, service_limits: Option<&str>) -> Slapd {
        let mut last_err = String::new();
        // A free port can be taken between probing and slapd's bind: retry a few times.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("sesame-slapd-")
                .tempdir()
                .expect("temp dir");
            let port = free_port();
            let tls = tls.then(|| make_tls(dir.path(), free_port()));
            write_config(dir.path(), tls.is_some(), service_limits);
            let slapd = Slapd {
                dir,
                port,
                tls,
                child: Mutex::new(None),
            };
            match slapd.spawn() {
                Ok(()) => {
                    slapd.ldap_tool("ldapadd", &["-e", "relax", "-f"], Some(&seed_ldif()), None);
                    return slapd;
                }
                Err(e) => last_err = e,
            }
        }
        panic!("slapd did not start: {last_err}");
    }

    fn spawn(&self) -> Result<(), String> {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(t) = &self.tls {
            urls.push_str(&format!(" ldaps://127.0.0.1:{}/", t.port));
        }
        // Readiness is "slapd starting" logged after this spawn (listeners bound) plus the
        // ports answering: a port answering alone could be another test's slapd.
        let log_start = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0) as usize;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| e.to_string())?;
        let mut child = Command::new("/usr/sbin/slapd")
            .args(["-h", &urls, "-F"])
            .arg(self.dir.path().join("slapd.d"))
            // -d keeps slapd in the foreground; "stats" logs every BIND/SRCH (see bind_count).
            .args(["-d", "stats"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run /usr/sbin/slapd: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut ports = vec![self.port];
        ports.extend(self.tls.as_ref().map(|t| t.port));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("slapd exited ({status}); log:\n{}", self.log()));
            }
            let started = self
                .log()
                .get(log_start..)
                .is_some_and(|l| l.contains("slapd starting"));
            if started
                && ports.iter().all(|p| {
                    TcpStream::connect_timeout(
                        &SocketAddr::from(([127, 0, 0, 1], *p)),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "slapd did not listen within 15 s; log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.child.lock().expect("child lock") = Some(child);
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ldap://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT` (only with `start_with_tls`).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls().port)
    }

    /// PEM of the CA that signed slapd's certificate (only with `start_with_tls`).
    pub fn ca_file(&self) -> PathBuf {
        self.tls().ca_file.clone()
    }

    /// PEM of an unrelated CA: verification against it must fail.
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.tls().wrong_ca_file.clone()
    }

    fn tls(&self) -> &Tls {
        self.tls
            .as_ref()
            .expect("this slapd has no TLS: use Slapd::start_with_tls()")
    }

    /// The fixture's temp dir (config, data, log, password file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file holding the service account's password (with a trailing newline, like `echo`),
    /// mode 0600 as Sesame requires of secret files.
    pub fn password_file(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.dir.path().join("sesame-ldap.password");
        if !path.exists() {
            fs::write(&path, format!("{SERVICE_PASSWORD}\n")).expect("write password file");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .expect("chmod password file");
        }
        path
    }

    /// A `DirectoryConfig` for this slapd over ldap:// on loopback (what `Config::load` would
    /// produce from `directory_toml()`): OpenLDAP, service account, default filter, 5 s timeout.
    pub fn directory_config(&self) -> DirectoryConfig {
        DirectoryConfig {
            kind: DirectoryKind::OpenLdap,
            url: self.url(),
            starttls: false,
            insecure_plaintext: false,
            ca_file: None,
            bind_dn: SERVICE_DN.into(),
            bind_password_file: self.password_file(),
            user_base: PEOPLE.into(),
            user_filter: "(uid={username})".into(),
            group_base: GROUPS.into(),
            sync_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            max_changes_per_sync: sesame::config::MaxChanges::Percent(5),
            suspend_grace: Duration::from_secs(30 * 86_400),
        }
    }

    /// `directory_config()` over ldaps:// trusting the test CA (only with `start_with_tls`).
    pub fn directory_config_ldaps(&self) -> DirectoryConfig {
        DirectoryConfig {
            url: self.ldaps_url(),
            ca_file: Some(self.ca_file()),
            ..self.directory_config()
        }
    }

    /// Whether slapd itself accepts a simple bind as `who` (uid or DN) with `password`
    /// (`ldapwhoami`), independently of Sesame.
    pub fn can_bind(&self, who: &str, password: &str) -> bool {
        Command::new("ldapwhoami")
            .args(["-x", "-H", &self.url(), "-D", &dn_of(who), "-w", password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The `[directory]` section of a sesame.toml for this slapd (ldap:// on loopback).
    pub fn directory_toml(&self) -> String {
        format!(
            "[directory]\nkind = \"openldap\"\nurl = \"{}\"\nbind_dn = \"{SERVICE_DN}\"\n\
             bind_password_file = \"{}\"\nuser_base = \"{PEOPLE}\"\nuser_filter = \"(uid={{username}})\"\n\
             group_base = \"{GROUPS}\"\nsync_interval = \"60s\"\ntimeout = \"5s\"\n",
            self.url(),
            self.password_file().display()
        )
    }

    // ---- changing the directory, as its administrator ---------------------------------------

    /// Applies an LDIF change set with `ldapmodify` as the rootdn; panics with slapd's answer
    /// if it is refused.
    pub fn modify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", &["-e", "relax"], None, Some(ldif));
    }

    /// Adds `member: DN` to group `cn` (`who` is a seeded uid, or a full DN).
    pub fn add_to_group(&self, who: &str, group_cn: &str) {
        self.modify(&format!(
            "dn: {}\nchangetype: modify\nadd: member\nmember: {}\n",
            group_dn(group_cn),
            dn_of(who)
        ));
    }

    /// Removes `member: DN` from group `cn`. A groupOfNames needs one member: removing the
    /// last one is refused by slapd (and panics here). Note mdupont is in
    /// personnels-administratifs only through gestionnaires-paie: removing her from
    /// gestionnaires-paie takes away both.
    pub fn remove_from_group(&self, who: &str, group_cn: &str) {
        self.modify(&format!(
            "dn: {}\nchangetype: modify\ndelete: member\nmember: {}\n",
            group_dn(group_cn),
            dn_of(who)
        ));
    }

    /// Locks the account (ppolicy `pwdAccountLockedTime: 000001010000Z`): binds are refused
    /// and Sesame reports it disabled.
    pub fn disable_user(&self, who: &str) {
        self.modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n",
            dn_of(who)
        ));
    }

    /// Unlocks the account.
    pub fn enable_user(&self, who: &str) {
        self.modify(&format!(
            "dn: {}\nchangetype: modify\ndelete: pwdAccountLockedTime\n",
            dn_of(who)
        ));
    }

    /// Deletes the user's entry (the memberof overlay removes it from its groups).
    pub fn delete_user(&self, who: &str) {
        self.delete_users(&[who]);
    }

    /// Deletes several people in one `ldapmodify`, so that a directory sync pass sees them all
    /// gone or none (one call each leaves a window where a pass sees only the first).
    pub fn delete_users(&self, who: &[&str]) {
        let ldif: Vec<String> = who
            .iter()
            .map(|w| format!("dn: {}\nchangetype: delete\n", dn_of(w)))
            .collect();
        self.modify(&ldif.join("\n"));
    }

    /// Sets a new (cleartext-stored) password.
    pub fn set_password(&self, who: &str, password: &str) {
        self.modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: userPassword\nuserPassword: {password}\n",
            dn_of(who)
        ));
    }

    /// Adds a person under ou=people (inetOrgPerson with uid, cn, sn, userPassword).
    pub fn add_user(&self, uid: &str, cn: &str, password: &str) {
        self.ldap_tool(
            "ldapadd",
            &[],
            None,
            Some(&format!(
                "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\nsn: {cn}\nuserPassword: {password}\n"
            )),
        );
    }

    /// Adds people under ou=people in one `ldapadd` (`add_user` for each, without a password:
    /// they never sign in), uid `uid` and cn "Agent `uid`".
    pub fn add_people(&self, uids: &[String]) {
        let ldif: String = uids
            .iter()
            .map(|uid| {
                format!(
                    "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Agent {uid}\nsn: Agent\n\n"
                )
            })
            .collect();
        self.ldap_tool("ldapadd", &[], None, Some(&ldif));
    }

    /// Adds a groupOfNames `cn` under ou=groups listing `members` (uids or DNs).
    pub fn add_group(&self, cn: &str, members: &[String]) {
        let mut ldif = format!(
            "dn: {}\nobjectClass: groupOfNames\ncn: {cn}\n",
            group_dn(cn)
        );
        for m in members {
            ldif.push_str(&format!("member: {}\n", dn_of(m)));
        }
        self.ldap_tool("ldapadd", &[], None, Some(&ldif));
    }

    // ---- outages ------------------------------------------------------------------------------

    /// Stops slapd (SIGTERM, waits): the port then refuses connections.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("child lock").take() {
            signal(&child, libc::SIGCONT);
            signal(&child, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts slapd again on the same port(s), with the same data.
    pub fn start_again(&self) {
        assert!(
            self.child.lock().expect("child lock").is_none(),
            "slapd is already running"
        );
        self.spawn()
            .unwrap_or_else(|e| panic!("slapd did not restart: {e}"));
    }

    /// Freezes slapd (SIGSTOP): connections are still accepted by the kernel but nothing
    /// answers, like a hung directory. Returns once every slapd thread is stopped (kill(2)
    /// returns before they are), so the next request cannot be the last one answered.
    /// `resume()` undoes it (Drop too).
    pub fn pause(&self) {
        let Some(pid) = self
            .child
            .lock()
            .expect("child lock")
            .as_ref()
            .map(Child::id)
        else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        let stopped = || {
            fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .all(|task| {
                    // "PID (comm) STATE …": the state follows the last ')'.
                    fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                        stat.rsplit_once(')')
                            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
                    })
                })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stopped() {
            assert!(Instant::now() < deadline, "slapd ({pid}) did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn resume(&self) {
        if let Some(child) = self.child.lock().expect("child lock").as_ref() {
            signal(child, libc::SIGCONT);
        }
    }

    // ---- what slapd saw -----------------------------------------------------------------------

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    /// slapd's log ("stats" level: one line per connection, BIND, SRCH, RESULT…).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// How many bind requests slapd received for `dn` (DN as sent, case-insensitive).
    /// slapd logs `BIND dn="…" method=128` once per request (and a second `mech=` line only
    /// on success).
    pub fn bind_count(&self, dn: &str) -> usize {
        let needle = format!("bind dn=\"{}\" method=", dn.to_lowercase());
        self.log()
            .lines()
            .filter(|l| l.to_lowercase().contains(&needle))
            .count()
    }

    /// How many search requests slapd received so far (a paged search counts one per page):
    /// slapd logs `SRCH base="…"` once per request.
    pub fn search_count(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(" SRCH base="))
            .count()
    }

    /// Waits (≤ 5 s) until slapd logged at least `n` binds for `dn`; returns the count seen.
    pub fn wait_bind_count(&self, dn: &str, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = self.bind_count(dn);
            if c >= n || Instant::now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs an OpenLDAP client tool as the rootdn against this slapd.
    fn ldap_tool(&self, tool: &str, extra: &[&str], file: Option<&Path>, stdin: Option<&str>) {
        let mut cmd = Command::new(tool);
        cmd.args([
            "-x",
            "-H",
            &self.url(),
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PASSWORD,
        ])
        .args(extra);
        if let Some(f) = file {
            cmd.arg(f);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write ldif");
        }
        let out = child.wait_with_output().expect("wait tool");
        assert!(
            out.status.success(),
            "{tool} failed ({}):\n{}{}\ninput:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            stdin.unwrap_or_default()
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.child.lock() {
            if let Some(mut child) = guard.take() {
                signal(&child, libc::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn dn_of(who: &str) -> String {
    if who.contains('=') {
        who.to_string()
    } else {
        user_dn(who)
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The cn=config template (config/ldap/slapd-config.ldif) instantiated for `dir`, with
/// `olcLimits` for the service account if given.
fn write_config(dir: &Path, tls: bool, service_limits: Option<&str>) {
    fs::create_dir_all(dir.join("slapd.d")).expect("slapd.d");
    fs::create_dir_all(dir.join("data")).expect("data dir");
    let template_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ldap/slapd-config.ldif");
    let template = fs::read_to_string(&template_path).expect("read config/ldap/slapd-config.ldif");
    let d = dir.to_str().expect("utf-8 temp dir");
    let ldif: String = template
        .lines()
        .filter_map(|l| match l.strip_suffix("# @TLS@") {
            Some(kept) if tls => Some(kept.trim_end().to_string()),
            Some(_) => None,
            None => Some(l.to_string()),
        })
        .map(|l| l.replace("@DIR@", d) + "\n")
        .map(|l| match service_limits {
            Some(limits) if l.starts_with("olcRootPW:") => {
                format!("{l}olcLimits: dn.exact=\"{SERVICE_DN}\" {limits}\n")
            }
            _ => l,
        })
        .collect();
    let path = dir.join("config.ldif");
    fs::write(&path, ldif).expect("write config.ldif");
    let out = Command::new("/usr/sbin/slapadd")
        .args(["-n0", "-F"])
        .arg(dir.join("slapd.d"))
        .arg("-l")
        .arg(&path)
        .output()
        .expect("run slapadd");
    assert!(
        out.status.success(),
        "slapadd -n0 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA.
fn make_tls(dir: &Path, port: u16) -> Tls {
    fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write server.ext");
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let ca_ext =
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign";
    for cmd in [
        format!("req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=Sesame-test-CA {ca_ext}"),
        format!("req -x509 {ec} -keyout wrong-ca.key -out wrong-ca.pem -days 2 -subj /CN=Unrelated-CA {ca_ext}"),
        format!("req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"),
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext".into(),
    ] {
        let out = Command::new("openssl")
            .args(cmd.split_whitespace())
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Tls {
        port,
        ca_file: dir.join("ca.pem"),
        wrong_ca_file: dir.join("wrong-ca.pem"),
    }
}
