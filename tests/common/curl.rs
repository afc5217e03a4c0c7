//! HTTP calls with curl from the calling thread's network namespace (JSON in, status and JSON out).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// One call: `(status, JSON body or Null)`; `jar` keeps cookies, `bearer` is a device token.
pub fn api(
    url: &str,
    method: &str,
    body: Option<&Value>,
    jar: Option<&Path>,
    bearer: Option<&str>,
) -> (u16, Value) {
    let mut c = Command::new("curl");
    c.args(["-s", "-m", "20", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
    }
    if let Some(j) = jar {
        let j = j.to_str().expect("utf-8 path");
        c.args(["-b", j, "-c", j]);
    }
    if let Some(t) = bearer {
        c.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    c.arg(url);
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}
