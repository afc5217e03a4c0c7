//! The tests' `sesame.toml`, written section by section (one builder for every test config), and
//! the sections that go with the seeded directory (config/ldap/academie.ldif): its roles, the
//! payroll and HR resources and their grants.

use std::path::{Path, PathBuf};

use super::world::{APP_PORT, PAIE, RH};

/// The roles of the seeded directory.
pub const ROLES: &str = r#"[roles]
vpn_users = ["cn=personnels-administratifs,ou=groups,dc=academie,dc=test"]
it_staff = ["cn=dsi,ou=groups,dc=academie,dc=test"]
auditors = ["cn=auditeurs,ou=groups,dc=academie,dc=test"]
"#;

/// Payroll to its managers' group, HR to theirs.
pub const GRANTS: &str = r#"[[grant]]
group = "cn=gestionnaires-paie,ou=groups,dc=academie,dc=test"
resources = ["paie"]

[[grant]]
group = "cn=gestionnaires-rh,ou=groups,dc=academie,dc=test"
resources = ["rh"]
"#;

/// Two `[[site]]`s, `rectorat` and `dsden56`, with their gateways' public keys (fixed: the
/// tests that read a site feed compare them).
pub const TWO_SITES: &str = r#"[[site]]
name = "rectorat"
endpoint = "vpn-rectorat.example.org:51820"
public_key = "mB1Xmcm9Bqi8Dxy9Yz6rIHzC9jJbYp7vDXXHa+VfRVI="

[[site]]
name = "dsden56"
endpoint = "vpn-dsden56.example.org:51820"
public_key = "Ly6ppXE4y6xWZMHAAP9t2QgYV9jB8Ew3IU6m2lFnrGo="
"#;

/// Payroll and HR on the resource hosts: TCP on the application port, and ICMP.
pub fn resource_sections() -> String {
    format!(
        r#"[[resource]]
name = "paie"
allow = ["{PAIE}/32 tcp:{APP_PORT}", "{PAIE}/32 icmp"]

[[resource]]
name = "rh"
allow = ["{RH}/32 tcp:{APP_PORT}", "{RH}/32 icmp"]
"#
    )
}

/// Payroll and HR ([`resource_sections`]) with their [`GRANTS`].
pub fn resources() -> String {
    format!("{}\n{GRANTS}", resource_sections())
}

/// A `sesame.toml` being written: `TestConfig::new().database(&url).portal("listen = …").text()`.
/// Keys given for one table (`[portal]`, `[gateway]`, `[database]`…) gather under its header, in
/// the order the tables were first named; whole sections (`[[resource]]`s, a `[directory]`
/// written by the slapd fixture…) follow as given.
#[derive(Clone, Debug, Default)]
pub struct TestConfig {
    tables: Vec<(String, String)>,
    sections: String,
}

impl TestConfig {
    pub fn new() -> TestConfig {
        TestConfig::default()
    }

    /// Adds `key = value` lines to `[table]`.
    pub fn table(mut self, table: &str, lines: &str) -> TestConfig {
        let lines = lines.trim_matches('\n');
        match self.tables.iter_mut().find(|(name, _)| name == table) {
            Some((_, body)) => {
                body.push_str(lines);
                body.push('\n');
            }
            None => self.tables.push((table.to_string(), format!("{lines}\n"))),
        }
        self
    }

    pub fn portal(self, lines: &str) -> TestConfig {
        self.table("portal", lines)
    }

    pub fn gateway(self, lines: &str) -> TestConfig {
        self.table("gateway", lines)
    }

    /// `[database] url`.
    pub fn database(self, url: &str) -> TestConfig {
        self.table("database", &format!("url = \"{url}\""))
    }

    /// `[database] url` of a SQLite file.
    pub fn sqlite(self, file: &Path) -> TestConfig {
        self.database(&format!("sqlite://{}", file.display()))
    }

    /// Whole sections, as written (each starts with its header).
    pub fn sections(mut self, text: &str) -> TestConfig {
        if !self.sections.is_empty() {
            self.sections.push('\n');
        }
        self.sections.push_str(text.trim_matches('\n'));
        self.sections.push('\n');
        self
    }

    /// The seeded directory's [`ROLES`].
    pub fn roles(self) -> TestConfig {
        self.sections(ROLES)
    }

    /// Payroll and HR, granted to their managers ([`resources`]).
    pub fn payroll_and_hr(self) -> TestConfig {
        self.sections(&resources())
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (name, body) in &self.tables {
            out.push_str(&format!("[{name}]\n{body}\n"));
        }
        out.push_str(&self.sections);
        out
    }

    /// Writes the file; its path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_path_buf()
    }
}
