//! The metrics listener read as Prometheus does (prometheus-parse), and single values from it.
#![allow(dead_code)]

use std::process::Command;

pub use prometheus_parse::Scrape;

/// Parses Prometheus text exposition.
pub fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

/// One scrape of `url` with curl from the calling thread's namespace (it must hold Sesame's
/// metrics).
pub fn scrape(url: &str) -> Scrape {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("sesame_"), "no metrics at {url}: {text:?}");
    parse(&text)
}

/// The values (counter, gauge or untyped) of `name` whose labels include `labels`.
fn values<'a>(
    s: &'a Scrape,
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = f64> + 'a {
    s.samples
        .iter()
        .filter(move |x| x.metric == name)
        .filter(move |x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(move |x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a single value"),
        })
}

/// The first sample of `name` with these labels; None when absent.
pub fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    values(s, name, labels).next()
}

/// The sum of `name` over all its labels (0 when absent).
pub fn total(s: &Scrape, name: &str) -> f64 {
    values(s, name, &[]).sum()
}
