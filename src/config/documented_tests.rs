//! Every key the configuration types accept is documented in `config/sesame.toml`, under its
//! section: the list of keys is read from the serde structure of [`RawConfig`] (so a key added
//! to the types fails this test until it is documented), not written by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_reflection::{ContainerFormat, Format, Registry, Tracer, TracerConfig};

use super::raw::RawConfig;
use super::Config;

/// `(section, key)` for every key of `name` in `registry`; nested tables and arrays of tables
/// (`[[roles.delegated]]`) extend the section.
fn keys_of(registry: &Registry, name: &str, section: &str, out: &mut BTreeSet<(String, String)>) {
    let Some(ContainerFormat::Struct(fields)) = registry.get(name) else {
        panic!("{name} is not a struct of named fields");
    };
    for field in fields {
        let mut format = &field.value;
        // `Option<T>` and `Vec<T>` of a struct are a (possibly repeated) table.
        while let Format::Option(inner) | Format::Seq(inner) = format {
            format = inner;
        }
        match format {
            Format::TypeName(inner) => {
                let nested = if section.is_empty() {
                    field.name.clone()
                } else {
                    format!("{section}.{}", field.name)
                };
                keys_of(registry, inner, &nested, out);
            }
            _ => {
                out.insert((section.to_string(), field.name.clone()));
            }
        }
    }
}

/// Every `(section, key)` the loader accepts.
fn accepted_keys() -> BTreeSet<(String, String)> {
    let mut tracer = Tracer::new(TracerConfig::default());
    tracer
        .trace_simple_type::<RawConfig>()
        .expect("the raw config types trace");
    let registry = tracer.registry().expect("complete registry");
    let mut keys = BTreeSet::new();
    keys_of(&registry, "RawConfig", "", &mut keys);
    keys
}

/// `(section, key)` for every key written in `text`, commented out or not: a line `[s]`,
/// `[[s]]`, `# [s] — prose` or `# [[s]]` opens section `s`; `key = …` or `# key = …` is a key.
fn documented_keys(text: &str) -> BTreeSet<(String, String)> {
    let mut section = String::new();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let bare = line.trim_start_matches(['#', ' ']).trim_end();
        if let Some(rest) = bare.strip_prefix('[') {
            let name = rest.trim_start_matches('[');
            if let Some(end) = name.find(']') {
                section = name[..end].trim().to_string();
            }
            continue;
        }
        if let Some((key, _)) = bare.split_once(" =") {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.insert((section.clone(), key.to_string()));
            }
        }
    }
    out
}

/// The accepted keys `text` does not document, as `section.key`.
fn undocumented(text: &str) -> Vec<String> {
    let documented = documented_keys(text);
    accepted_keys()
        .into_iter()
        .filter(|k| !documented.contains(k))
        .map(|(s, k)| format!("{s}.{k}"))
        .collect()
}

#[test]
fn the_example_config_parses_and_documents_every_key_the_types_accept() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sesame.toml");
    let config = Config::load(&path).expect("config/sesame.toml is valid");
    assert!(config.directory.is_some());
    let text = std::fs::read_to_string(&path).expect("read config/sesame.toml");
    let missing = undocumented(&text);
    assert!(
        missing.is_empty(),
        "not documented in config/sesame.toml (add each, commented out if optional): {missing:?}"
    );
}

#[test]
fn the_key_list_comes_from_the_types_and_a_missing_key_is_caught() {
    let keys = accepted_keys();
    let sections: BTreeMap<&str, usize> = keys.iter().fold(BTreeMap::new(), |mut m, (s, _)| {
        *m.entry(s.as_str()).or_default() += 1;
        m
    });
    // Every section of the file, the arrays of tables and the nested one included.
    for s in [
        "portal",
        "gateway",
        "database",
        "directory",
        "roles",
        "roles.delegated",
        "audit",
        "devices",
        "log",
        "metrics",
        "resource",
        "grant",
        "peer",
    ] {
        assert!(
            sections.contains_key(s),
            "section {s} not traced: {sections:?}"
        );
    }
    for key in [
        ("portal", "trusted_proxies"),
        ("portal", "secret_key_file"),
        ("portal", "max_connections_per_source"),
        ("directory", "max_changes_per_sync"),
        ("roles.delegated", "scope"),
        ("peer", "persistent_keepalive"),
        ("audit", "checkpoint_interval"),
        ("gateway", "max_cache_age"),
    ] {
        assert!(keys.contains(&(key.0.into(), key.1.into())), "{key:?}");
    }
    // The example with one key removed fails, naming it; a key of the same name in another
    // section does not count.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sesame.toml");
    let text = std::fs::read_to_string(path).expect("read config/sesame.toml");
    let without: String = text
        .lines()
        .filter(|l| {
            !l.trim_start_matches(['#', ' '])
                .starts_with("suspend_grace =")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(undocumented(&without), vec!["directory.suspend_grace"]);
    let moved = text
        .replace("\nflow_window =", "\n# flow_window moved\n")
        .replace("[metrics]\n", "[metrics]\nflow_window = \"60s\"\n");
    assert_eq!(undocumented(&moved), vec!["audit.flow_window"]);
}
