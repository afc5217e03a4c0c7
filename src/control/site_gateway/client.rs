//! The site gateway's HTTP client to its portals: the long-polled feed and the events batches,
//! with the site token, the portals tried in turn.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;

use crate::api::feed::{EventsAccepted, FeedUpdate, GatewayEvents, DEFAULT_WAIT_SECS};
use crate::config::SiteGatewayConfig;

/// How long a connection to a portal may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond the long-poll's own wait, how long an answer may take.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// Why a portal did not answer usefully.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: cannot read the site token: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the site token file is empty: write the token `sesame site token` printed")]
    EmptyToken { path: PathBuf },
    #[error("{path}: cannot read the portal CA: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM certificate: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("preparing the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("portal {portal} refused the site token (401): run `sesame site token --site {site}` on the portal host and write the new token to [gateway] portal_token_file; the gateway keeps serving its cache meanwhile")]
    Unauthorized { portal: String, site: String },
    #[error("portal {portal} answered {status}")]
    Status { portal: String, status: StatusCode },
    #[error("portal {portal} unreachable: {source}")]
    Http {
        portal: String,
        #[source]
        source: reqwest::Error,
    },
}

/// The client of one site gateway.
#[derive(Clone)]
pub struct PortalClient {
    http: reqwest::Client,
    portals: Vec<String>,
    token: String,
    site: String,
}

impl PortalClient {
    /// Reads the token (and the CA if any) and prepares the client.
    pub fn new(cfg: &SiteGatewayConfig) -> Result<PortalClient, ClientError> {
        let token = std::fs::read_to_string(&cfg.token_file)
            .map_err(|source| ClientError::Token {
                path: cfg.token_file.clone(),
                source,
            })?
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(ClientError::EmptyToken {
                path: cfg.token_file.clone(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("sesame-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| ClientError::Ca {
                    path: path.clone(),
                    source,
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(PortalClient {
            http: builder.build().map_err(ClientError::Build)?,
            portals: cfg.portals.clone(),
            token,
            site: cfg.site.clone(),
        })
    }

    pub fn portals(&self) -> &[String] {
        &self.portals
    }

    /// One long-poll of `portal` (index into [`PortalClient::portals`]): `None` when nothing
    /// changed within the wait.
    pub async fn feed(
        &self,
        portal: usize,
        since: Option<u64>,
    ) -> Result<Option<FeedUpdate>, ClientError> {
        let base = &self.portals[portal % self.portals.len()];
        // `site`: the portal refuses a token of another site (site names need no escaping).
        let mut url = format!(
            "{base}/api/v1/gateway/feed?site={}&wait={DEFAULT_WAIT_SECS}",
            self.site
        );
        if let Some(v) = since {
            url.push_str(&format!("&since={v}"));
        }
        let answer = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(DEFAULT_WAIT_SECS) + ANSWER_MARGIN)
            .send()
            .await
            .map_err(|source| self.http_error(base, source))?;
        match answer.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => answer
                .json::<FeedUpdate>()
                .await
                .map(Some)
                .map_err(|source| self.http_error(base, source)),
            status => Err(self.status_error(base, status)),
        }
    }

    /// Posts one batch of events to `portal`; the number of records it took.
    pub async fn events(&self, portal: usize, batch: &GatewayEvents) -> Result<u64, ClientError> {
        let base = &self.portals[portal % self.portals.len()];
        let answer = self
            .http
            .post(format!("{base}/api/v1/gateway/events?site={}", self.site))
            .bearer_auth(&self.token)
            .timeout(ANSWER_MARGIN + CONNECT_TIMEOUT)
            .json(batch)
            .send()
            .await
            .map_err(|source| self.http_error(base, source))?;
        match answer.status() {
            StatusCode::OK => answer
                .json::<EventsAccepted>()
                .await
                .map(|a| a.accepted)
                .map_err(|source| self.http_error(base, source)),
            status => Err(self.status_error(base, status)),
        }
    }

    fn http_error(&self, portal: &str, source: reqwest::Error) -> ClientError {
        ClientError::Http {
            portal: portal.to_string(),
            source,
        }
    }

    fn status_error(&self, portal: &str, status: StatusCode) -> ClientError {
        if status == StatusCode::UNAUTHORIZED {
            ClientError::Unauthorized {
                portal: portal.to_string(),
                site: self.site.clone(),
            }
        } else {
            ClientError::Status {
                portal: portal.to_string(),
                status,
            }
        }
    }
}
