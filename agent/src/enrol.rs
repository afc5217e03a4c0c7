//! `enrol` and `rotate`: a key made on the laptop, only its public half sent, files replaced atomically.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sesame::api::{codes, EnrolRequest};

use crate::error::AgentError;
use crate::files;
use crate::i18n::Lang;
use crate::mfa::{read_code, CodeSource};
use crate::portal::{Portal, PortalError};
use crate::state::{self, AgentState, Paths, DEFAULT_INTERFACE, DEFAULT_REFRESH_SECS};
use crate::wgconf::WgConf;
use sesame::api::mfa::MfaRegistration;
use sesame::key::PrivateKey;

/// Time allowed for one API call.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the password comes from: never the command line or the environment.
#[derive(Debug, Clone, Copy)]
pub enum PasswordSource {
    /// A no-echo prompt on the terminal.
    Prompt,
    /// The first line of standard input (`--password-stdin`).
    Stdin,
}

pub struct EnrolArgs<'a> {
    pub portal: &'a str,
    pub code: &'a str,
    pub user: &'a str,
    pub password: PasswordSource,
    pub ca_file: Option<&'a Path>,
    /// `--insecure`: a plain http:// portal outside loopback is accepted (labs).
    pub insecure: bool,
    pub dir: &'a Path,
    pub lang: Lang,
}

impl EnrolArgs<'_> {
    /// Where a second-factor code comes from: the next stdin line after `--password-stdin`.
    pub fn code_source(&self) -> CodeSource {
        match self.password {
            PasswordSource::Stdin => CodeSource::Stdin,
            PasswordSource::Prompt => CodeSource::Prompt,
        }
    }
}

/// What `enrol` did, for the success message.
pub struct Enrolled {
    pub device_id: i64,
    pub address: String,
    pub conf: PathBuf,
    pub plain_http: bool,
    /// A second factor to register (shown once; confirmed with `mfa::confirm`).
    pub registration: Option<MfaRegistration>,
}

pub fn read_password(source: PasswordSource, lang: Lang) -> Result<String, AgentError> {
    let password = match source {
        PasswordSource::Stdin => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(AgentError::PasswordIo)?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        PasswordSource::Prompt => {
            let prompt = match lang {
                Lang::Fr => "Mot de passe du compte académique : ",
                Lang::En => "Password of your académie account: ",
            };
            rpassword::prompt_password(prompt).map_err(AgentError::PasswordIo)?
        }
    };
    if password.is_empty() {
        return Err(AgentError::NoPassword);
    }
    Ok(password)
}

/// Enrols this laptop: new key, `POST /api/v1/enrol`, then `sesame.conf` and `agent.toml`.
pub fn enrol(args: &EnrolArgs<'_>) -> Result<Enrolled, AgentError> {
    let ca_file = args
        .ca_file
        .map(|path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
    let portal = Portal::new(
        args.portal,
        ca_file.as_deref(),
        args.insecure,
        API_TIMEOUT,
        args.lang,
    )?;
    let password = read_password(args.password, args.lang)?;
    let secret = PrivateKey::generate();
    let mut request = EnrolRequest {
        code: args.code.trim().to_string(),
        username: args.user.trim().to_string(),
        password,
        public_key: secret.public_key().to_base64(),
        hostname: hostname(),
        otp: None,
    };
    let paths = Paths::new(args.dir);
    // A laptop enrolled before shows the portal's device cookie: it passes the account lock.
    let known = state::known_device_cookie(&paths);
    // Once the user has a second factor, the portal asks for a code: read it, send again.
    let (mut device, device_cookie) = match portal.enrol(&request, known.as_deref()) {
        Err(e) if e.code() == Some(codes::MFA_REQUIRED) => {
            request.otp = Some(read_code(args.code_source(), args.lang)?);
            portal.enrol(&request, known.as_deref())?
        }
        answer => answer?,
    };
    let registration = device.mfa_registration.take();
    let token = device
        .device_token
        .clone()
        .ok_or(PortalError::Unexpected { status: 201 })?;
    let conf = WgConf::from_device(secret, &device).map_err(|source| AgentError::Conf {
        path: portal.base_url().to_string(),
        source,
    })?;

    files::ensure_private_dir(&paths.dir)?;
    files::write_private_atomic(&paths.conf(), conf.render().as_bytes())?;
    let _ = std::fs::remove_file(paths.conf_pending());
    AgentState {
        portal: portal.base_url().to_string(),
        device_id: device.device_id,
        device_token: token,
        ca_file,
        insecure: args.insecure,
        interface: DEFAULT_INTERFACE.to_string(),
        refresh_interval_secs: DEFAULT_REFRESH_SECS,
        device_cookie: device_cookie.or(known),
    }
    .save(&paths)?;
    state::save_device_cache(&paths, &device)?;
    Ok(Enrolled {
        device_id: device.device_id,
        address: device.tunnel_address,
        conf: paths.conf(),
        plain_http: portal.is_plain_http(),
        registration,
    })
}

/// Loads and checks `sesame.conf`.
pub fn load_conf(path: &Path) -> Result<WgConf, AgentError> {
    if !path.exists() {
        return Err(state::StateError::NotEnrolled(path.to_path_buf()).into());
    }
    let text = files::read_private(path)?;
    WgConf::parse(&text).map_err(|source| AgentError::Conf {
        path: path.display().to_string(),
        source,
    })
}

/// The new expiry after a rotation.
pub struct Rotated {
    pub expires_at: String,
}

/// Replaces the device key. The new config is first written to `sesame.conf.pending`; only after
/// the portal accepted the key is it renamed over `sesame.conf`. An interrupted rotation is resumed
/// with the same pending key, so the laptop always keeps a config the portal knows.
pub fn rotate(paths: &Paths, lang: Lang) -> Result<Rotated, AgentError> {
    let mut agent = AgentState::load(paths)?;
    let _lock = files::lock_dir(&paths.dir)?;
    let current = load_conf(&paths.conf())?;
    let pending = if paths.conf_pending().exists() {
        load_conf(&paths.conf_pending())?
    } else {
        let mut next = current.clone();
        next.private_key = PrivateKey::generate();
        files::write_private_atomic(&paths.conf_pending(), next.render().as_bytes())?;
        next
    };
    let portal = Portal::new(
        &agent.portal,
        agent.ca_file.as_deref(),
        agent.insecure,
        API_TIMEOUT,
        lang,
    )?;
    let answer = match portal.rotate(
        &agent.device_token,
        &pending.private_key.public_key().to_base64(),
    ) {
        Ok(answer) => answer,
        // The portal already holds this key: an earlier run got through before being cut.
        Err(err) if err.code() == Some(codes::PUBLIC_KEY_IN_USE) => None,
        Err(err) if err.is_transport() => {
            return Err(if paths.conf_pending().exists() {
                AgentError::RotationInterrupted
            } else {
                err.into()
            })
        }
        Err(err) => {
            let _ = std::fs::remove_file(paths.conf_pending());
            return Err(err.into());
        }
    };
    files::rename_durable(&paths.conf_pending(), &paths.conf())?;
    let device = match answer {
        Some(device) => Some(device),
        None => portal.device_config(&agent.device_token).ok(),
    };
    let mut expires_at = String::new();
    if let Some(device) = device {
        if let Some(token) = &device.device_token {
            agent.device_token = token.clone();
            agent.save(paths)?;
        }
        if let Ok(conf) = WgConf::from_device(pending.private_key.clone(), &device) {
            files::write_private_atomic(&paths.conf(), conf.render().as_bytes())?;
        }
        state::save_device_cache(paths, &device)?;
        expires_at = device.expires_at;
    }
    Ok(Rotated { expires_at })
}

/// This machine's name, sent to the portal so IT can recognise the laptop.
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
        String::new()
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").unwrap_or_default()
    }
}
