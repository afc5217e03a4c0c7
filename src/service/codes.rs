//! Enrolment codes: the TTL bounds, the request rules, the bulk CSV, issuing (one or many).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::audit::AuditContext;
use crate::directory::DirectoryUser;
use crate::store::{Batch, CreatedCode, NewCode, StoreError};
use crate::time::parse_duration;

use super::roles::{Actor, Role, Scope};
use super::{ServiceError, Services};

/// Shortest lifetime of an enrolment code.
pub const MIN_CODE_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime of an enrolment code (API, pages and CLI alike).
pub const MAX_CODE_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Most rows one bulk CSV may hold.
pub const MAX_BULK_ROWS: usize = 2000;

/// A code's lifetime from its text (`72h`, `7d`…); empty or absent means the default (72 h).
pub fn parse_ttl(text: Option<&str>) -> Result<Duration, ServiceError> {
    let ttl = match text.map(str::trim) {
        None | Some("") => crate::store::DEFAULT_CODE_TTL,
        Some(t) => parse_duration(t).map_err(|m| ServiceError::Invalid(format!("ttl: {m}")))?,
    };
    if ttl < MIN_CODE_TTL || ttl > MAX_CODE_TTL {
        return Err(ServiceError::Invalid(
            "ttl: entre 1 minute et 30 jours / between 1 minute and 30 days".into(),
        ));
    }
    Ok(ttl)
}

/// One code request, trimmed and checked (the name rules themselves are the store's).
pub fn code_request(
    username: &str,
    device_name: &str,
    ttl: Duration,
) -> Result<NewCode, ServiceError> {
    let new = NewCode {
        username: username.trim().to_string(),
        device_name: device_name.trim().to_string(),
        ttl,
    };
    match crate::store::validate_code_request(&new) {
        Ok(()) => Ok(new),
        Err(StoreError::InvalidInput(m)) if m.starts_with("device name") => {
            Err(ServiceError::Invalid(format!(
                "device_name: 1 à 128 caractères imprimables / 1 to 128 printable characters ({m})"
            )))
        }
        Err(StoreError::InvalidInput(m)) => Err(ServiceError::Invalid(format!(
            "username: 1 à 128 caractères imprimables / 1 to 128 printable characters ({m})"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A bad row of a bulk CSV: its 1-based line and what is wrong (French / English).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

/// Reads a bulk CSV with header `user,device`. All or nothing: any bad row (unreadable, wrong
/// field count, invalid name, duplicate user and device) makes the whole file refused, each
/// problem reported with its line.
pub fn parse_csv(text: &str, ttl: Duration) -> Result<Vec<NewCode>, Vec<LineError>> {
    let bad = |line: u64, message: String| LineError { line, message };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(vec![bad(
                1,
                format!("en-tête illisible / unreadable header: {e}"),
            )])
        }
    };
    let names: Vec<String> = headers.iter().map(str::to_ascii_lowercase).collect();
    if names != ["user", "device"] {
        return Err(vec![bad(
            1,
            format!(
                "l'en-tête doit être `user,device` / the header must be `user,device` (found {:?})",
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        )]);
    }
    let mut problems = Vec::new();
    let mut requests = Vec::new();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(bad(line, format!("ligne illisible / unreadable line: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != 2 {
            problems.push(bad(line, format!(
                "2 champs attendus (user,device), {n} trouvés / expected 2 fields (user,device), found {n}",
                n = record.len()
            )));
            continue;
        }
        let new = match code_request(&record[0], &record[1], ttl) {
            Ok(n) => n,
            Err(e) => {
                problems.push(bad(line, format!("ligne invalide / invalid row: {e}")));
                continue;
            }
        };
        let k = (new.username.to_lowercase(), new.device_name.clone());
        if let Some(first) = seen.insert(k, line) {
            problems.push(bad(line, format!(
                "même utilisateur et appareil qu'à la ligne {first} / same user and device as line {first}"
            )));
            continue;
        }
        requests.push(new);
    }
    if requests.len() > MAX_BULK_ROWS {
        problems.push(bad(
            0,
            format!("au plus {MAX_BULK_ROWS} lignes par fichier / at most {MAX_BULK_ROWS} rows per file"),
        ));
    }
    if problems.is_empty() {
        Ok(requests)
    } else {
        Err(problems)
    }
}

/// The 1-based line of the CSV that holds data row `index` (0-based; the header is line 1),
/// numbered as [`parse_csv`] numbers its errors; 0 if there is no such row.
pub fn csv_line(text: &str, index: usize) -> u64 {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    reader
        .records()
        .nth(index)
        .and_then(|r| r.ok())
        .and_then(|r| r.position().map(|p| p.line()))
        .unwrap_or(0)
}

/// The audit context of `actor` acting from `source_ip`.
fn context(actor: &Actor, source_ip: Option<IpAddr>) -> AuditContext {
    AuditContext::new(actor.username.clone(), source_ip.map(|ip| ip.to_string()))
}

/// Issues codes without asking the directory (the CLI: the user is checked at redemption).
/// All rows in one transaction: all or nothing.
pub async fn issue_unchecked(
    svc: &Services,
    actor: &Actor,
    requests: &[NewCode],
) -> Result<Vec<CreatedCode>, ServiceError> {
    actor.require(Role::ItStaff)?;
    Ok(svc
        .store()
        .create_codes(requests, &context(actor, None))
        .await?)
}

/// The user a code may be issued for, by this actor: known to the directory, enabled, a VPN
/// user, and within the actor's delegated scope (else `UnknownUser`, as if unknown).
pub async fn issuable_user(
    svc: &Services,
    actor: &Actor,
    username: &str,
) -> Result<DirectoryUser, ServiceError> {
    actor.require(Role::ItStaff)?;
    let user = svc
        .lookup(username)
        .await?
        .ok_or_else(|| ServiceError::UnknownUser(username.to_string()))?;
    if !actor.manages(&user.groups) {
        return Err(ServiceError::UnknownUser(username.to_string()));
    }
    if user.disabled {
        return Err(ServiceError::AccountDisabled);
    }
    if !Actor::resolve(&svc.config().roles, &user.username, &user.groups).has(Role::VpnUser) {
        return Err(ServiceError::NotVpnUser);
    }
    Ok(user)
}

/// Checks every request's user for this actor ([`issuable_user`]) and refreshes them in the
/// store; the first bad one fails with its index.
async fn check_users(
    svc: &Services,
    actor: &Actor,
    requests: &[NewCode],
) -> Result<(), (usize, ServiceError)> {
    let mut users = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        users.push(
            issuable_user(svc, actor, &r.username)
                .await
                .map_err(|e| (i, e))?,
        );
    }
    for (i, u) in users.iter().enumerate() {
        svc.store()
            .upsert_user(u)
            .await
            .map_err(|e| (i, e.into()))?;
    }
    Ok(())
}

/// One code for one agent on behalf of a signed-in technician (API and page alike): the TTL
/// text (absent: the default), the name rules, the user checks ([`issuable_user`]).
pub async fn issue_one(
    svc: &Services,
    actor: &Actor,
    username: &str,
    device_name: &str,
    ttl: Option<&str>,
    source_ip: Option<IpAddr>,
) -> Result<CreatedCode, ServiceError> {
    actor.require(Role::ItStaff)?;
    let request = code_request(username, device_name, parse_ttl(ttl)?)?;
    check_users(svc, actor, std::slice::from_ref(&request))
        .await
        .map_err(|(_, e)| e)?;
    let mut created = svc
        .store()
        .create_codes(std::slice::from_ref(&request), &context(actor, source_ip))
        .await?;
    created.pop().ok_or(ServiceError::NotFound)
}

/// Codes for every row of a bulk CSV, recorded as one batch (the progress board follows it):
/// every user is checked first, then all codes are written in one transaction. A bad row fails
/// the whole batch with its index.
pub async fn issue_batch(
    svc: &Services,
    actor: &Actor,
    label: &str,
    requests: &[NewCode],
    source_ip: Option<IpAddr>,
) -> Result<(i64, Vec<CreatedCode>), (usize, ServiceError)> {
    actor.require(Role::ItStaff).map_err(|e| (0, e))?;
    check_users(svc, actor, requests).await?;
    let label: String = label
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    svc.store()
        .create_batch(&label, requests, &context(actor, source_ip))
        .await
        .map_err(|e| (0, e.into()))
}

/// The batches issued so far (IT staff), newest first. A delegated technician sees only the
/// batches whose every code is for one of their users: another DSDEN's file name, author and
/// date stay hidden.
pub async fn batches(svc: &Services, actor: &Actor) -> Result<Vec<Batch>, ServiceError> {
    actor.require(Role::ItStaff)?;
    Ok(match &actor.scope {
        Scope::All => svc.store().batches().await?,
        Scope::Groups(groups) => {
            let groups: Vec<String> = groups.iter().cloned().collect();
            svc.store().batches_in_scope(&groups).await?
        }
    })
}

/// Where one code of a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Redeemed: the laptop is enrolled.
    Used,
    /// Past its expiry, never redeemed.
    Expired,
    /// Still valid, not redeemed yet: this agent has not enrolled.
    Pending,
}

/// A batch's progress board, limited to the users the actor manages.
#[derive(Debug, Clone)]
pub struct Board {
    pub batch: Batch,
    pub rows: Vec<(crate::store::BatchCode, Progress)>,
}

impl Board {
    pub fn count(&self, p: Progress) -> usize {
        self.rows.iter().filter(|(_, q)| *q == p).count()
    }
}

/// The progress board of batch `id` (IT staff; a delegated technician sees their users only,
/// and another scope's batch not at all: `NotFound`, as if unknown).
pub async fn board(svc: &Services, actor: &Actor, id: i64) -> Result<Board, ServiceError> {
    actor.require(Role::ItStaff)?;
    let store = svc.store();
    // Another scope's batch is answered as an unknown one.
    if actor.is_delegated() && !batches(svc, actor).await?.iter().any(|b| b.id == id) {
        return Err(ServiceError::NotFound);
    }
    let (batch, codes) = store.batch(id).await?.ok_or(ServiceError::NotFound)?;
    let now = store.now_ms();
    let mut rows = Vec::with_capacity(codes.len());
    for c in codes {
        if actor.is_delegated() {
            let groups = store
                .user(&c.username)
                .await?
                .map(|u| u.groups)
                .unwrap_or_default();
            if !actor.manages(&groups) {
                continue;
            }
        }
        let p = match c.redeemed_at {
            Some(_) => Progress::Used,
            None if now >= c.expires_at => Progress::Expired,
            None => Progress::Pending,
        };
        rows.push((c, p));
    }
    Ok(Board { batch, rows })
}

#[cfg(test)]
#[path = "scope_tests.rs"]
mod scope_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds_are_one_minute_to_thirty_days() {
        assert_eq!(
            parse_ttl(None).expect("default"),
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(
            parse_ttl(Some("")).expect("default"),
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(parse_ttl(Some("30d")).expect("max"), MAX_CODE_TTL);
        assert_eq!(parse_ttl(Some("1m")).expect("min"), MIN_CODE_TTL);
        for bad in ["31d", "59s", "0h", "soon"] {
            let e = parse_ttl(Some(bad)).expect_err(bad);
            assert!(e.to_string().starts_with("ttl: "), "{bad}: {e}");
        }
    }

    #[test]
    fn device_names_follow_one_rule() {
        let ok = code_request(" alice ", " pc paie ", MIN_CODE_TTL).expect("ok");
        assert_eq!(
            (ok.username.as_str(), ok.device_name.as_str()),
            ("alice", "pc paie")
        );
        for bad in ["", "  ", "a\u{7}b", &"x".repeat(129)] {
            let e = code_request("alice", bad, MIN_CODE_TTL).expect_err(bad);
            assert!(e.to_string().starts_with("device_name: "), "{e}");
        }
        assert!(code_request("", "pc", MIN_CODE_TTL).is_err());
    }

    #[test]
    fn bulk_csv_reports_every_bad_line_and_issues_nothing() {
        let good = parse_csv(
            "user,device\nalice,pc\n bob ,\"pc paie, 2e\"\n",
            MIN_CODE_TTL,
        )
        .expect("good");
        assert_eq!(good.len(), 2);
        assert_eq!(good[1].device_name, "pc paie, 2e");
        let errs = parse_csv(
            "user,device\nalice,pc\n,pc\nalice,pc\ncarol\ndan,ok\n",
            MIN_CODE_TTL,
        )
        .expect_err("bad");
        let lines: Vec<u64> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert_eq!(csv_line("user,device\nalice,pc\nbob,pc\n", 1), 3);
        assert_eq!(csv_line("user,device\nalice,pc\n", 5), 0);
        let e = parse_csv("name,laptop\nalice,pc\n", MIN_CODE_TTL).expect_err("header");
        assert_eq!(e[0].line, 1);
    }
}
