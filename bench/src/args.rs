//! A tiny `--flag value` parser: the bench tools are driven by run.sh, not by people.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{anyhow, Context as _};

/// Flags given as `--name value` (or `--name` alone, meaning "true").
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses the process arguments.
    pub fn from_env() -> anyhow::Result<Args> {
        Args::parse(std::env::args().skip(1))
    }

    pub fn parse(items: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
        let mut values = HashMap::new();
        let mut it = items.into_iter().peekable();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| anyhow!("unexpected argument {a:?}: flags look like --name value"))?
                .to_string();
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "true".to_string(),
            };
            values.insert(name, value);
        }
        Ok(Args { values })
    }

    /// The flag's value, or an error naming the missing flag.
    pub fn req<T: FromStr>(&self, name: &str) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let v = self
            .values
            .get(name)
            .ok_or_else(|| anyhow!("missing flag --{name}"))?;
        v.parse::<T>()
            .map_err(|e| anyhow!("--{name} {v:?}: {e}"))
            .context("bad flag")
    }

    /// The flag's value, or `default` when absent.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        if self.values.contains_key(name) {
            self.req(name)
        } else {
            Ok(default)
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| v == "true")
    }
}
