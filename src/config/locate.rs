//! Maps key paths to lines and lines to key paths in the source text, for error messages.
//!
//! serde's view of the file has no positions; toml_edit keeps spans for every key and value.

use std::ops::Range;
use std::path::Path;

use super::ConfigError;

/// A key path inside the document: table keys and array indices.
#[derive(Debug, Clone)]
pub(super) enum Seg {
    Key(&'static str),
    Index(usize),
}

pub(super) fn key(k: &'static str) -> Seg {
    Seg::Key(k)
}
pub(super) fn idx(i: usize) -> Seg {
    Seg::Index(i)
}

pub(super) fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Locates keys in the source text (toml_edit keeps spans; serde's view does not).
pub(super) struct Locator<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> Locator<'a> {
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn span(&self, path: &[Seg]) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item: &toml_edit::Item = doc.as_item();
        let mut last_span = None;
        for seg in path {
            let next = match seg {
                Seg::Key(k) => match item {
                    toml_edit::Item::Table(t) => {
                        if let Some((kk, _)) = t.get_key_value(k) {
                            last_span = kk.span().or(last_span);
                        }
                        t.get(k)
                    }
                    toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
                        if let Some((kk, _)) = t.get_key_value(k) {
                            last_span = kk.span().or(last_span);
                        }
                        t.get(k).map(|_| &item[*k])
                    }
                    _ => None,
                },
                Seg::Index(i) => match item {
                    toml_edit::Item::ArrayOfTables(a) => a.get(*i).map(|_| &item[*i]),
                    toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                        a.get(*i).map(|_| &item[*i])
                    }
                    _ => None,
                },
            };
            match next {
                Some(n) => {
                    item = n;
                    if let Some(s) = item.span() {
                        last_span = Some(s);
                    }
                }
                None => break,
            }
        }
        last_span
    }

    pub(super) fn error(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.span(path).map(|s| self.line_of(s.start)),
            key: path_string(path),
            message: message.into(),
        }
    }

    /// The dotted key whose value covers `offset`, for serde errors that only carry a span.
    pub(super) fn key_at(&self, offset: usize) -> String {
        fn walk(item: &toml_edit::Item, offset: usize, out: &mut String) {
            let within = |s: Option<Range<usize>>| {
                s.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
            };
            match item {
                toml_edit::Item::Table(t) => {
                    for (k, v) in t.iter() {
                        let key_span = t.key(k).and_then(|kk| kk.span());
                        if within(v.span())
                            || within(key_span)
                            || matches!(
                                v,
                                toml_edit::Item::Table(_) | toml_edit::Item::ArrayOfTables(_)
                            ) && contains(v, offset)
                        {
                            if !out.is_empty() {
                                out.push('.');
                            }
                            out.push_str(k);
                            walk(v, offset, out);
                            return;
                        }
                    }
                }
                toml_edit::Item::ArrayOfTables(a) => {
                    for (i, t) in a.iter().enumerate() {
                        let as_item = toml_edit::Item::Table(t.clone());
                        if contains(&as_item, offset) {
                            out.push_str(&format!("[{i}]"));
                            walk(&as_item, offset, out);
                            return;
                        }
                    }
                }
                toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                    for (i, v) in a.iter().enumerate() {
                        if within(v.span()) {
                            out.push_str(&format!("[{i}]"));
                            return;
                        }
                    }
                }
                _ => {}
            }
        }
        /// Whether a table (whose own span is only its header) holds `offset` in any value.
        fn contains(item: &toml_edit::Item, offset: usize) -> bool {
            let hit = |s: Option<Range<usize>>| {
                s.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
            };
            match item {
                toml_edit::Item::Table(t) => {
                    hit(t.span())
                        || t.iter().any(|(k, v)| {
                            hit(t.key(k).and_then(|kk| kk.span()))
                                || hit(v.span())
                                || contains(v, offset)
                        })
                }
                toml_edit::Item::ArrayOfTables(a) => a
                    .iter()
                    .any(|t| contains(&toml_edit::Item::Table(t.clone()), offset)),
                other => hit(other.span()),
            }
        }
        let mut out = String::new();
        if let Some(doc) = &self.doc {
            walk(doc.as_item(), offset, &mut out);
        }
        out
    }
}
