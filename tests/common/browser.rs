//! Headless Chromium driven over WebDriver (chromedriver + fantoccini) for the web portal's
//! tests: each visited page is screenshotted into `target/web-screenshots/<test>/` and checked
//! with axe-core (no serious or critical violation).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Where screenshots go (the README names it).
pub fn screenshot_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("web-screenshots")
}

/// chromedriver on a free loopback port, with a fresh Chromium profile.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    count: usize,
    axe: String,
}

impl Browser {
    pub async fn start(test: &str) -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: run `packaging/install-deps.sh test` (chromium, chromium-driver)"
            );
        }
        let axe_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/browser/node_modules/axe-core/axe.min.js");
        if !axe_path.exists() {
            // The lock file pins axe-core; node_modules is not committed.
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
            let _ = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .status();
        }
        let axe = std::fs::read_to_string(&axe_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `npm ci --prefix tests/browser`",
                axe_path.display()
            )
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                // A French-speaking agent's browser (the portal is French first).
                "prefs": { "intl.accept_languages": "fr-FR,fr" },
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900", "--lang=fr-FR",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let http = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(http)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver: {e}"),
            }
        };
        let shots = screenshot_root().join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            _profile: profile,
            shots,
            count: 0,
            axe,
        }
    }

    /// Opens `url`, then [`Self::check`]s it.
    pub async fn visit(&mut self, url: &str, name: &str) -> String {
        self.client.goto(url).await.unwrap();
        self.check(name).await
    }

    /// Screenshot and axe-core on the current page; returns its HTML.
    pub async fn check(&mut self, name: &str) -> String {
        self.count += 1;
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(
            self.shots.join(format!("{:02}-{name}.png", self.count)),
            png,
        )
        .unwrap();
        self.client.execute(&self.axe, vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document).then(r => done(r.violations
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' ' +
                          v.nodes.map(n => n.target.join(' ')).join(', '))));",
                vec![],
            )
            .await
            .unwrap();
        let found: Vec<String> = serde_json::from_value(found).unwrap();
        assert!(found.is_empty(), "axe-core on {name}: {found:#?}");
        self.client.source().await.unwrap()
    }

    /// Types into the field labelled by id `id`.
    pub async fn fill(&self, id: &str, text: &str) {
        let el = self.client.find(Locator::Id(id)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    /// Chooses the option of value `value` in the `<select>` of id `id`.
    pub async fn select(&self, id: &str, value: &str) {
        let el = self.client.find(Locator::Id(id)).await.unwrap();
        el.select_by_value(value).await.unwrap();
    }

    /// Chooses `path` in the file input `id`.
    pub async fn attach(&self, id: &str, path: &std::path::Path) {
        let el = self.client.find(Locator::Id(id)).await.unwrap();
        el.send_keys(path.to_str().unwrap()).await.unwrap();
    }

    /// Clicks the first element matching `css` and waits for the page it leads to.
    pub async fn click(&self, css: &str) {
        let old = self.client.find(Locator::Css("html")).await.unwrap();
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The old document's root goes stale once the next page replaced it.
        let started = Instant::now();
        while old.tag_name().await.is_ok() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no page after clicking {css}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while self
            .client
            .execute("return document.readyState", vec![])
            .await
            .ok()
            .and_then(|v| v.as_str().map(|s| s == "complete"))
            != Some(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "page load after {css}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    /// Text of a same-origin GET made by the page itself (with its cookies): exports.
    pub async fn fetch_text(&self, path: &str) -> String {
        let v = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch(arguments[0]).then(r => r.text()).then(done, e => done('ERROR ' + e));",
                vec![json!(path)],
            )
            .await
            .unwrap();
        v.as_str().unwrap_or_default().to_string()
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
