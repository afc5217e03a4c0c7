//! Every sentence the agent shows a user, in French (default) and English, in one table.

use std::fmt;

/// Language of the messages: French unless `--lang en` or `LANG=en*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    /// `--lang` wins; then `LC_ALL`, `LC_MESSAGES`, `LANG` (first non-empty); French otherwise.
    pub fn detect(flag: Option<&str>) -> Lang {
        if let Some(flag) = flag {
            return Lang::from_tag(flag);
        }
        for var in ["LC_ALL", "LC_MESSAGES", "LANG"] {
            if let Ok(value) = std::env::var(var) {
                if !value.is_empty() {
                    return Lang::from_tag(&value);
                }
            }
        }
        Lang::Fr
    }

    /// `en`, `en_GB.UTF-8`, `EN` → English; anything else → French.
    pub fn from_tag(tag: &str) -> Lang {
        if tag.to_ascii_lowercase().starts_with("en") {
            Lang::En
        } else {
            Lang::Fr
        }
    }
}

/// One message, with the details it shows. `text(lang)` renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    // Answers of the portal, by stable API code.
    WrongCode,
    CodeExpired,
    CodeAlreadyUsed,
    CodeWrongUser {
        user: String,
    },
    WrongPassword,
    EmptyPassword,
    NotVpnUser,
    AccountDisabled,
    TooManyAttempts,
    DeviceRevoked,
    DeviceUnknown,
    KeyRejected {
        code: String,
    },
    PoolExhausted,
    PortalTrouble {
        code: String,
    },
    PortalRefused {
        code: String,
        message: String,
    },
    UnexpectedAnswer {
        status: u16,
    },
    // Transport.
    PortalUnreachable {
        url: String,
    },
    TlsInvalid {
        url: String,
    },
    BadPortalUrl {
        url: String,
    },
    CaFileUnreadable {
        path: String,
        detail: String,
    },
    // Local files and system.
    NoPassword,
    NotEnrolled {
        dir: String,
    },
    InsecureFile {
        path: String,
        mode: u32,
    },
    FileError {
        path: String,
        detail: String,
    },
    ConfigInvalid {
        path: String,
        line: usize,
        detail: String,
    },
    AlreadyRunning {
        pid: i32,
    },
    TunnelFailed {
        detail: String,
        log: String,
    },
    UnsupportedPlatform {
        conf: String,
    },
    RotationInterrupted,
    // Success and status.
    Enrolled {
        device_id: i64,
        address: String,
        conf: String,
    },
    PlainHttpWarning {
        url: String,
    },
    PlainHttpRefused {
        url: String,
    },
    TunnelUp {
        iface: String,
    },
    TunnelUpNoHandshake {
        iface: String,
    },
    TunnelDown {
        iface: String,
    },
    NotRunning,
    Rotated {
        expires_at: String,
    },
    StatusConnected {
        iface: String,
    },
    StatusNotConnected,
    StatusHandshake {
        secs: u64,
    },
    StatusNoHandshake,
    StatusBytes {
        rx: u64,
        tx: u64,
    },
    StatusResources,
    StatusNoResources,
    StatusExpiry {
        expires_at: String,
    },
    StatusPortalStale {
        url: String,
    },
    StatusDnsNotApplied {
        dns: String,
    },
    // Second factor.
    MfaCodeNeeded,
    WrongOtp,
    MfaNotRegistered,
    ReauthRequired,
    MfaRegister {
        secret: String,
    },
    RecoveryCodes,
    Unlocked {
        until: String,
    },
    StatusMfaOpen {
        until: String,
    },
    StatusMfaClosed,
    /// Before the sites' lines in `status`.
    StatusSites,
    /// One site's gateway in `status` (several sites).
    StatusSite {
        site: String,
        endpoint: String,
        handshake_secs: Option<u64>,
        routes: String,
    },
}

impl Msg {
    /// The sentence, in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        match lang {
            Lang::Fr => self.fr(),
            Lang::En => self.en(),
        }
    }

    /// True for messages that report a failure (each must say what to do).
    pub fn is_error(&self) -> bool {
        !matches!(
            self,
            Msg::Enrolled { .. }
                | Msg::PlainHttpWarning { .. }
                | Msg::TunnelUp { .. }
                | Msg::TunnelUpNoHandshake { .. }
                | Msg::TunnelDown { .. }
                | Msg::NotRunning
                | Msg::Rotated { .. }
                | Msg::StatusConnected { .. }
                | Msg::StatusNotConnected
                | Msg::StatusHandshake { .. }
                | Msg::StatusNoHandshake
                | Msg::StatusBytes { .. }
                | Msg::StatusResources
                | Msg::StatusNoResources
                | Msg::StatusExpiry { .. }
                | Msg::StatusPortalStale { .. }
                | Msg::StatusDnsNotApplied { .. }
                | Msg::MfaRegister { .. }
                | Msg::RecoveryCodes
                | Msg::Unlocked { .. }
                | Msg::StatusMfaOpen { .. }
                | Msg::StatusMfaClosed
                | Msg::StatusSites
                | Msg::StatusSite { .. }
        )
    }

    fn fr(&self) -> String {
        match self {
            Msg::WrongCode => "Code d'enrôlement inconnu. Vérifiez le code remis par le service informatique (DSI), puis recommencez ; s'il est toujours refusé, demandez un nouveau code à la DSI.".into(),
            Msg::CodeExpired => "Ce code d'enrôlement a expiré. Demandez un nouveau code au service informatique (DSI), puis recommencez.".into(),
            Msg::CodeAlreadyUsed => "Ce code d'enrôlement a déjà servi. Demandez un nouveau code au service informatique (DSI), puis recommencez.".into(),
            Msg::CodeWrongUser { user } => format!("Ce code d'enrôlement a été créé pour un autre compte que « {user} ». Vérifiez votre identifiant (--user) ; si c'est bien le vôtre, demandez à la DSI un code à votre nom."),
            Msg::WrongPassword => "Identifiant ou mot de passe incorrect. Saisissez le mot de passe de votre compte académique (celui de la messagerie), puis recommencez. Si vous êtes sûr de votre mot de passe, votre compte n'a peut-être pas accès au VPN ou est désactivé : contactez le service informatique (DSI).".into(),
            Msg::EmptyPassword => "Le mot de passe est vide. Relancez la commande et tapez le mot de passe de votre compte académique.".into(),
            Msg::NotVpnUser => "Votre compte n'est pas autorisé à utiliser le VPN. Demandez à votre responsable de solliciter cet accès auprès du service informatique (DSI).".into(),
            Msg::AccountDisabled => "Votre compte est désactivé dans l'annuaire. Contactez le service informatique (DSI).".into(),
            Msg::TooManyAttempts => "Trop de tentatives. Patientez quelques minutes, puis recommencez.".into(),
            Msg::DeviceRevoked => "Cet ordinateur a été révoqué par le service informatique : il ne peut plus se connecter au VPN. Lancez « sesame-agent down », puis demandez un nouveau code d'enrôlement à la DSI et enrôlez à nouveau l'ordinateur.".into(),
            Msg::DeviceUnknown => "Le portail ne reconnaît plus cet ordinateur. Demandez un nouveau code d'enrôlement au service informatique (DSI) et enrôlez à nouveau l'ordinateur.".into(),
            Msg::KeyRejected { code } => format!("Le portail a refusé la clé de cet ordinateur ({code}). Relancez la commande : une nouvelle clé sera générée ; si cela se reproduit, contactez la DSI."),
            Msg::PoolExhausted => "Le portail n'a plus d'adresse VPN disponible. Contactez le service informatique (DSI).".into(),
            Msg::PortalTrouble { code } => format!("Le portail rencontre un problème temporaire ({code}). Réessayez dans quelques minutes ; si cela persiste, contactez le service informatique (DSI)."),
            Msg::PortalRefused { code, message } => format!("Le portail a refusé la demande ({code} : {message}). Contactez le service informatique (DSI) en lui transmettant ce message."),
            Msg::UnexpectedAnswer { status } => format!("Réponse inattendue du portail (HTTP {status}). Vérifiez l'adresse du portail (--portal) ; si elle est juste, contactez le service informatique (DSI)."),
            Msg::PortalUnreachable { url } => format!("Impossible de joindre le portail {url}. Vérifiez votre connexion Internet et l'adresse du portail, puis recommencez."),
            Msg::TlsInvalid { url } => format!("Le certificat du portail {url} n'est pas valide : la connexion a été coupée par sécurité. Vérifiez l'adresse du portail ; si la DSI vous a remis un certificat d'autorité, indiquez-le avec --ca-file. Ne saisissez pas votre mot de passe ailleurs."),
            Msg::BadPortalUrl { url } => format!("Adresse de portail invalide : « {url} ». Indiquez l'adresse donnée par la DSI, qui commence par https://."),
            Msg::PlainHttpRefused { url } => format!("Refusé : le portail {url} est en HTTP non chiffré, hors de cette machine ; votre mot de passe et le jeton de l'ordinateur passeraient en clair sur le réseau. Indiquez l'adresse du portail en https:// donnée par la DSI. Pour un laboratoire seulement, ajoutez --insecure."),
            Msg::CaFileUnreadable { path, detail } => format!("Impossible d'utiliser le certificat d'autorité {path} ({detail}). Vérifiez le fichier passé à --ca-file."),
            Msg::NoPassword => "Aucun mot de passe n'a été saisi. Relancez la commande et tapez votre mot de passe quand il est demandé.".into(),
            Msg::NotEnrolled { dir } => format!("Cet ordinateur n'est pas encore enrôlé (rien dans {dir}). Lancez d'abord « sesame-agent enrol » avec le code remis par la DSI."),
            Msg::InsecureFile { path, mode } => format!("Le fichier {path} est lisible par d'autres utilisateurs (droits {mode:o}) alors qu'il contient la clé privée. Corrigez avec « chmod 600 {path} », puis recommencez."),
            Msg::FileError { path, detail } => format!("Impossible d'accéder à {path} ({detail}). Lancez la commande en administrateur (sudo) et vérifiez qu'il reste de la place sur le disque."),
            Msg::ConfigInvalid { path, line, detail } => format!("Le fichier {path} est invalide (ligne {line} : {detail}). Enrôlez à nouveau l'ordinateur ou restaurez ce fichier."),
            Msg::AlreadyRunning { pid } => format!("Le tunnel est déjà actif (processus {pid}). Consultez « sesame-agent status », ou arrêtez-le avec « sesame-agent down »."),
            Msg::TunnelFailed { detail, log } => format!("Le tunnel n'a pas pu démarrer : {detail}. Lancez la commande en administrateur (sudo) ; les détails sont dans {log}."),
            Msg::UnsupportedPlatform { conf } => format!("Cette commande ne fonctionne que sous Linux. Sous Windows ou macOS, importez le fichier {conf} dans le client WireGuard officiel."),
            Msg::RotationInterrupted => "Le changement de clé a été interrompu avant la réponse du portail. Relancez « sesame-agent rotate » : la même nouvelle clé sera proposée.".into(),
            Msg::Enrolled { device_id, address, conf } => format!("Cet ordinateur est enrôlé (appareil n° {device_id}, adresse VPN {address}). Configuration écrite dans {conf}. Lancez « sesame-agent up » pour vous connecter."),
            Msg::PlainHttpWarning { url } => format!("Attention : le portail {url} est en HTTP non chiffré (réservé aux laboratoires)."),
            Msg::TunnelUp { iface } => format!("Tunnel {iface} actif et connecté à la passerelle."),
            Msg::TunnelUpNoHandshake { iface } => format!("Tunnel {iface} actif ; la passerelle n'a pas encore répondu (consultez « sesame-agent status » dans un instant)."),
            Msg::TunnelDown { iface } => format!("Tunnel {iface} arrêté ; interface et routes retirées."),
            Msg::NotRunning => "Le tunnel n'est pas actif.".into(),
            Msg::Rotated { expires_at } => format!("Nouvelle clé en place, valable jusqu'au {expires_at}."),
            Msg::StatusConnected { iface } => format!("État : connecté ({iface})"),
            Msg::StatusNotConnected => "État : non connecté".into(),
            Msg::StatusHandshake { secs } => format!("Dernier échange de clés : il y a {secs} s"),
            Msg::StatusNoHandshake => "Dernier échange de clés : aucun".into(),
            Msg::StatusBytes { rx, tx } => format!("Données : {rx} octets reçus, {tx} octets envoyés"),
            Msg::StatusResources => "Ressources accessibles depuis cet ordinateur :".into(),
            Msg::StatusNoResources => "Ressources accessibles : aucune (demandez un accès à la DSI si besoin)".into(),
            Msg::StatusExpiry { expires_at } => format!("Clé valable jusqu'au : {expires_at} (renouvelez-la avec « sesame-agent rotate »)"),
            Msg::StatusPortalStale { url } => format!("Portail {url} injoignable : informations de la dernière mise à jour."),
            Msg::StatusDnsNotApplied { dns } => format!("DNS du VPN ({dns}) non appliqué automatiquement sous Linux."),
            Msg::MfaCodeNeeded => "Le code de votre application d'authentification (6 chiffres) est demandé. Relancez la commande et saisissez-le ; téléphone perdu : appelez la DSI, qui réinitialisera votre second facteur.".into(),
            Msg::WrongOtp => "Code refusé : incorrect, déjà utilisé ou trop ancien. Patientez jusqu'au code suivant de votre application (toutes les 30 secondes), puis relancez la commande ou saisissez un code de secours ; téléphone perdu : appelez la DSI pour une réinitialisation.".into(),
            Msg::MfaNotRegistered => "Aucun second facteur n'est enregistré pour votre compte. Demandez à la DSI un code d'enregistrement (ou une réinitialisation si vous avez perdu votre téléphone).".into(),
            Msg::ReauthRequired => "Cet ordinateur doit être déverrouillé avec votre code avant de renouveler sa clé. Lancez « sesame-agent unlock », puis relancez « sesame-agent rotate ».".into(),
            Msg::MfaRegister { secret } => format!("Second facteur : scannez ce QR code avec votre application d'authentification (ou saisissez la clé {secret}), puis tapez le premier code qu'elle affiche."),
            Msg::RecoveryCodes => "Codes de secours, à usage unique, affichés une seule fois : notez-les et gardez-les hors de cet ordinateur (ils remplacent le code si vous n'avez plus votre téléphone).".into(),
            Msg::Unlocked { until } => format!("Accès aux ressources protégées (second facteur) ouvert jusqu'au : {until}."),
            Msg::StatusMfaOpen { until } => format!("Ressources protégées : ouvertes jusqu'au {until}."),
            Msg::StatusSites => "Sites (une passerelle chacun) :".into(),
            Msg::StatusSite { site, endpoint, handshake_secs, routes } => format!(
                "  - site {site} ({endpoint}) : {} ; achemine {routes}",
                handshake_secs.map_or("aucun échange de clés".to_string(), |secs| format!("dernier échange de clés il y a {secs} s"))
            ),
            Msg::StatusMfaClosed => "Ressources protégées : fermées. Pour les ouvrir : « sesame-agent unlock », puis le code de votre application.".into(),
        }
    }

    fn en(&self) -> String {
        match self {
            Msg::WrongCode => "Unknown enrolment code. Check the code IT gave you and try again; if it is still refused, ask IT for a new code.".into(),
            Msg::CodeExpired => "This enrolment code has expired. Ask IT for a new code, then try again.".into(),
            Msg::CodeAlreadyUsed => "This enrolment code has already been used. Ask IT for a new code, then try again.".into(),
            Msg::CodeWrongUser { user } => format!("This enrolment code was issued for another account than \"{user}\". Check your username (--user); if it is yours, ask IT for a code in your name."),
            Msg::WrongPassword => "Wrong username or password. Type the password of your académie account (the one of your mailbox) and try again. If you are sure of your password, your account may have no VPN access or be disabled: contact IT.".into(),
            Msg::EmptyPassword => "The password is empty. Run the command again and type the password of your académie account.".into(),
            Msg::NotVpnUser => "Your account is not allowed to use the VPN. Ask your manager to request this access from IT.".into(),
            Msg::AccountDisabled => "Your account is disabled in the directory. Contact IT.".into(),
            Msg::TooManyAttempts => "Too many attempts. Wait a few minutes, then try again.".into(),
            Msg::DeviceRevoked => "This laptop was revoked by IT: it can no longer connect to the VPN. Run \"sesame-agent down\", then ask IT for a new enrolment code and enrol the laptop again.".into(),
            Msg::DeviceUnknown => "The portal no longer recognises this laptop. Ask IT for a new enrolment code and enrol the laptop again.".into(),
            Msg::KeyRejected { code } => format!("The portal refused this laptop's key ({code}). Run the command again: a new key will be generated; if it happens again, contact IT."),
            Msg::PoolExhausted => "The portal has no VPN address left. Contact IT.".into(),
            Msg::PortalTrouble { code } => format!("The portal has a temporary problem ({code}). Try again in a few minutes; if it persists, contact IT."),
            Msg::PortalRefused { code, message } => format!("The portal refused the request ({code}: {message}). Contact IT and give them this message."),
            Msg::UnexpectedAnswer { status } => format!("Unexpected answer from the portal (HTTP {status}). Check the portal address (--portal); if it is right, contact IT."),
            Msg::PortalUnreachable { url } => format!("Cannot reach the portal {url}. Check your Internet connection and the portal address, then try again."),
            Msg::TlsInvalid { url } => format!("The certificate of the portal {url} is not valid: the connection was cut for safety. Check the portal address; if IT gave you a CA certificate, pass it with --ca-file. Do not type your password anywhere else."),
            Msg::BadPortalUrl { url } => format!("Invalid portal address: \"{url}\". Use the address IT gave you, starting with https://."),
            Msg::PlainHttpRefused { url } => format!("Refused: the portal {url} is unencrypted HTTP outside this machine; your password and the device token would cross the network in clear. Use the portal's https:// address IT gave you. For a lab only, add --insecure."),
            Msg::CaFileUnreadable { path, detail } => format!("Cannot use the CA certificate {path} ({detail}). Check the file given to --ca-file."),
            Msg::NoPassword => "No password was typed. Run the command again and type your password when asked.".into(),
            Msg::NotEnrolled { dir } => format!("This laptop is not enrolled yet (nothing in {dir}). First run \"sesame-agent enrol\" with the code IT gave you."),
            Msg::InsecureFile { path, mode } => format!("The file {path} is readable by other users (mode {mode:o}) although it holds the private key. Fix it with \"chmod 600 {path}\", then try again."),
            Msg::FileError { path, detail } => format!("Cannot access {path} ({detail}). Run the command as administrator (sudo) and check the disk is not full."),
            Msg::ConfigInvalid { path, line, detail } => format!("The file {path} is invalid (line {line}: {detail}). Enrol the laptop again or restore this file."),
            Msg::AlreadyRunning { pid } => format!("The tunnel is already running (process {pid}). See \"sesame-agent status\", or stop it with \"sesame-agent down\"."),
            Msg::TunnelFailed { detail, log } => format!("The tunnel could not start: {detail}. Run the command as administrator (sudo); details are in {log}."),
            Msg::UnsupportedPlatform { conf } => format!("This command only works on Linux. On Windows or macOS, import the file {conf} into the official WireGuard client."),
            Msg::RotationInterrupted => "The key change was interrupted before the portal answered. Run \"sesame-agent rotate\" again: the same new key will be offered.".into(),
            Msg::Enrolled { device_id, address, conf } => format!("This laptop is enrolled (device #{device_id}, VPN address {address}). Configuration written to {conf}. Run \"sesame-agent up\" to connect."),
            Msg::PlainHttpWarning { url } => format!("Warning: the portal {url} uses unencrypted HTTP (for labs only)."),
            Msg::TunnelUp { iface } => format!("Tunnel {iface} up and connected to the gateway."),
            Msg::TunnelUpNoHandshake { iface } => format!("Tunnel {iface} up; the gateway has not answered yet (see \"sesame-agent status\" in a moment)."),
            Msg::TunnelDown { iface } => format!("Tunnel {iface} stopped; interface and routes removed."),
            Msg::NotRunning => "The tunnel is not running.".into(),
            Msg::Rotated { expires_at } => format!("New key in place, valid until {expires_at}."),
            Msg::StatusConnected { iface } => format!("State: connected ({iface})"),
            Msg::StatusNotConnected => "State: not connected".into(),
            Msg::StatusHandshake { secs } => format!("Last handshake: {secs} s ago"),
            Msg::StatusNoHandshake => "Last handshake: none".into(),
            Msg::StatusBytes { rx, tx } => format!("Data: {rx} bytes received, {tx} bytes sent"),
            Msg::StatusResources => "Resources this laptop may reach:".into(),
            Msg::StatusNoResources => "Resources this laptop may reach: none (ask IT for access if needed)".into(),
            Msg::StatusExpiry { expires_at } => format!("Key valid until: {expires_at} (renew it with \"sesame-agent rotate\")"),
            Msg::StatusPortalStale { url } => format!("Portal {url} unreachable: showing the last known information."),
            Msg::StatusDnsNotApplied { dns } => format!("VPN DNS ({dns}) is not applied automatically on Linux."),
            Msg::MfaCodeNeeded => "The code of your authenticator app (6 digits) is required. Run the command again and type it; phone lost: call IT, who will reset your second factor.".into(),
            Msg::WrongOtp => "Code refused: wrong, already used or too old. Wait for the next code of your app (every 30 seconds) and run the command again, or type a recovery code; phone lost: call IT for a reset.".into(),
            Msg::MfaNotRegistered => "No second factor is registered for your account. Ask IT for a registration code (or a reset if you lost your phone).".into(),
            Msg::ReauthRequired => "This laptop must be unlocked with your code before it renews its key. Run \"sesame-agent unlock\", then run \"sesame-agent rotate\" again.".into(),
            Msg::MfaRegister { secret } => format!("Second factor: scan this QR code with your authenticator app (or type the key {secret}), then type the first code it shows."),
            Msg::RecoveryCodes => "Recovery codes, single use, shown only once: write them down and keep them away from this laptop (they replace the code if you no longer have your phone).".into(),
            Msg::Unlocked { until } => format!("Access to protected resources (second factor) open until: {until}."),
            Msg::StatusMfaOpen { until } => format!("Protected resources: open until {until}."),
            Msg::StatusSites => "Sites (one gateway each):".into(),
            Msg::StatusSite { site, endpoint, handshake_secs, routes } => format!(
                "  - site {site} ({endpoint}): {}; routes {routes}",
                handshake_secs.map_or("no handshake yet".to_string(), |secs| format!("last handshake {secs} s ago"))
            ),
            Msg::StatusMfaClosed => "Protected resources: closed. To open them: \"sesame-agent unlock\", then the code of your app.".into(),
        }
    }
}

/// A message bound to a language, for `{}` formatting.
pub struct Localized<'a>(pub &'a Msg, pub Lang);

impl fmt::Display for Localized<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text(self.1))
    }
}

/// One sample of every message, for table tests.
#[cfg(test)]
pub(crate) fn every_message() -> Vec<Msg> {
    let s = || "x".to_string();
    vec![
        Msg::WrongCode,
        Msg::CodeExpired,
        Msg::CodeAlreadyUsed,
        Msg::CodeWrongUser { user: s() },
        Msg::WrongPassword,
        Msg::EmptyPassword,
        Msg::NotVpnUser,
        Msg::AccountDisabled,
        Msg::TooManyAttempts,
        Msg::DeviceRevoked,
        Msg::DeviceUnknown,
        Msg::KeyRejected { code: s() },
        Msg::PoolExhausted,
        Msg::PortalTrouble { code: s() },
        Msg::PortalRefused {
            code: s(),
            message: s(),
        },
        Msg::UnexpectedAnswer { status: 500 },
        Msg::PortalUnreachable { url: s() },
        Msg::TlsInvalid { url: s() },
        Msg::BadPortalUrl { url: s() },
        Msg::PlainHttpRefused { url: s() },
        Msg::CaFileUnreadable {
            path: s(),
            detail: s(),
        },
        Msg::NoPassword,
        Msg::NotEnrolled { dir: s() },
        Msg::InsecureFile {
            path: s(),
            mode: 0o644,
        },
        Msg::FileError {
            path: s(),
            detail: s(),
        },
        Msg::ConfigInvalid {
            path: s(),
            line: 1,
            detail: s(),
        },
        Msg::AlreadyRunning { pid: 1 },
        Msg::TunnelFailed {
            detail: s(),
            log: s(),
        },
        Msg::UnsupportedPlatform { conf: s() },
        Msg::RotationInterrupted,
        Msg::Enrolled {
            device_id: 1,
            address: s(),
            conf: s(),
        },
        Msg::PlainHttpWarning { url: s() },
        Msg::TunnelUp { iface: s() },
        Msg::TunnelUpNoHandshake { iface: s() },
        Msg::TunnelDown { iface: s() },
        Msg::NotRunning,
        Msg::Rotated { expires_at: s() },
        Msg::StatusConnected { iface: s() },
        Msg::StatusNotConnected,
        Msg::StatusHandshake { secs: 3 },
        Msg::StatusNoHandshake,
        Msg::StatusBytes { rx: 1, tx: 2 },
        Msg::StatusResources,
        Msg::StatusNoResources,
        Msg::StatusExpiry { expires_at: s() },
        Msg::StatusPortalStale { url: s() },
        Msg::StatusDnsNotApplied { dns: s() },
        Msg::MfaCodeNeeded,
        Msg::WrongOtp,
        Msg::MfaNotRegistered,
        Msg::ReauthRequired,
        Msg::MfaRegister { secret: s() },
        Msg::RecoveryCodes,
        Msg::Unlocked { until: s() },
        Msg::StatusMfaOpen { until: s() },
        Msg::StatusMfaClosed,
        Msg::StatusSites,
        Msg::StatusSite {
            site: s(),
            endpoint: s(),
            handshake_secs: Some(3),
            routes: s(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FR_ACTIONS: &[&str] = &[
        "Vérifiez",
        "Demandez",
        "demandez",
        "Saisissez",
        "Relancez",
        "Contactez",
        "Patientez",
        "Lancez",
        "Corrigez",
        "Réessayez",
        "Enrôlez",
        "Consultez",
        "Indiquez",
        "importez",
    ];
    const EN_ACTIONS: &[&str] = &[
        "Check", "Ask", "ask", "Type", "Run", "run", "Contact", "Wait", "Fix", "Try", "Enrol",
        "See", "Use", "import",
    ];

    #[test]
    fn every_message_exists_in_both_languages_and_differs() {
        for msg in every_message() {
            let fr = msg.text(Lang::Fr);
            let en = msg.text(Lang::En);
            assert!(!fr.is_empty() && !en.is_empty(), "{msg:?}");
            assert_ne!(fr, en, "{msg:?} is not translated");
        }
    }

    #[test]
    fn every_error_says_what_to_do() {
        for msg in every_message().into_iter().filter(Msg::is_error) {
            let fr = msg.text(Lang::Fr);
            let en = msg.text(Lang::En);
            assert!(
                FR_ACTIONS.iter().any(|a| fr.contains(a)),
                "no action in: {fr}"
            );
            assert!(
                EN_ACTIONS.iter().any(|a| en.contains(a)),
                "no action in: {en}"
            );
        }
    }

    #[test]
    fn language_tags() {
        assert_eq!(Lang::from_tag("en_GB.UTF-8"), Lang::En);
        assert_eq!(Lang::from_tag("EN"), Lang::En);
        assert_eq!(Lang::from_tag("fr_FR.UTF-8"), Lang::Fr);
        assert_eq!(Lang::from_tag("C"), Lang::Fr);
        assert_eq!(Lang::detect(Some("en")), Lang::En);
        assert_eq!(Lang::detect(Some("fr")), Lang::Fr);
    }

    #[test]
    fn details_are_shown() {
        let m = Msg::InsecureFile {
            path: "/etc/sesame-agent/sesame.conf".into(),
            mode: 0o644,
        };
        assert!(m
            .text(Lang::Fr)
            .contains("chmod 600 /etc/sesame-agent/sesame.conf"));
        assert!(m.text(Lang::En).contains("mode 644"));
        let m = Msg::CodeWrongUser {
            user: "mdupont".into(),
        };
        assert!(m.text(Lang::Fr).contains("« mdupont »"));
    }
}
