//! Who may open a socket: authentication modes and their settings, the public host names, the
//! proxies whose `X-Forwarded-For` is believed, and where operators read `/health`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, check_url, invalid};

/// One way a client may prove who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AuthMode {
    /// Nobody is asked: every client is the anonymous principal (single-tenant).
    None,
    /// A key from `RAGCHAT_API_KEYS`, named by its principal.
    ApiKey,
    /// An OIDC bearer token (Microsoft Entra ID or any issuer), checked against its JWKS.
    Jwt,
    /// Azure App Service Authentication: the platform signs the user in and injects
    /// `X-MS-CLIENT-PRINCIPAL-*` headers (only behind App Service, which strips them from
    /// clients' requests).
    EasyAuth,
}

/// Authentication and exposure settings, as given.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Authentication: none, or any of api_key, jwt, easy_auth (comma-separated). Binding a
    /// non-loopback address with `none` needs RAGCHAT_ALLOW_ANONYMOUS=true.
    #[arg(
        long,
        env = "RAGCHAT_AUTH",
        value_enum,
        value_delimiter = ',',
        default_value = "none",
        global = true
    )]
    pub auth: Vec<AuthMode>,

    /// Serve anonymous clients on a non-loopback address on purpose (demos).
    #[arg(long, env = "RAGCHAT_ALLOW_ANONYMOUS", default_value = "false", global = true,
          action = clap::ArgAction::Set, value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_anonymous: bool,

    /// API keys, `principal=key` pairs, comma-separated (a secret: use a Key Vault reference on
    /// Azure). Keys are at least 24 characters of A-Z a-z 0-9 - _ . ~; two keys may name the
    /// same principal (rotation).
    #[arg(long, env = "RAGCHAT_API_KEYS", hide_env_values = true, global = true)]
    pub api_keys: Option<SecretString>,

    /// OIDC issuer of accepted JWTs (its discovery document names the JWKS), e.g.
    /// https://login.microsoftonline.com/TENANT/v2.0.
    #[arg(long, env = "RAGCHAT_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Audience accepted JWTs must name (the app's client id or URI).
    #[arg(long, env = "RAGCHAT_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// JWKS URL, when the issuer has no discovery document.
    #[arg(long, env = "RAGCHAT_JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,

    /// The claim naming the principal.
    #[arg(
        long,
        env = "RAGCHAT_JWT_PRINCIPAL_CLAIM",
        default_value = "sub",
        global = true
    )]
    pub jwt_principal_claim: String,

    /// Least seconds between two fetches of the issuer's signing keys (an unknown `kid` fetches
    /// them again, a key rotation; this bounds how often a flood of made-up ids can).
    #[arg(
        long,
        env = "RAGCHAT_JWT_REFRESH_SECS",
        default_value_t = 30,
        global = true
    )]
    pub jwt_refresh_secs: u64,

    /// Seconds a browser has, after connecting, to send its `auth` frame.
    #[arg(
        long,
        env = "RAGCHAT_AUTH_TIMEOUT_SECS",
        default_value_t = 5,
        global = true
    )]
    pub auth_timeout_secs: u64,

    /// Host names the public reaches this service by (comma-separated): a browser's upgrade
    /// must name one of them in `Host` (DNS rebinding). Empty: localhost names, the hosts of
    /// RAGCHAT_ALLOWED_ORIGINS and WEBSITE_HOSTNAME.
    #[arg(
        long,
        env = "RAGCHAT_PUBLIC_HOSTS",
        value_delimiter = ',',
        global = true
    )]
    pub public_hosts: Vec<String>,

    /// The App Service default host name (Azure sets it): a public host.
    #[arg(long, env = "WEBSITE_HOSTNAME", global = true)]
    pub website_hostname: Option<String>,

    /// Proxies in front of the service whose `X-Forwarded-For` is believed: a number of hops
    /// (e.g. 1 behind App Service or Caddy) or CIDRs (e.g. 10.0.0.0/8). Empty: the peer address
    /// is the client's.
    #[arg(
        long,
        env = "RAGCHAT_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<String>,

    /// A second, private address serving `/health` (details) for operators, e.g.
    /// 127.0.0.1:9000. On the public address `/health` then answers only authenticated callers.
    #[arg(long, env = "RAGCHAT_OPERATOR_ADDR", global = true)]
    pub operator_addr: Option<SocketAddr>,
}

/// Which X-Forwarded-For entries come from proxies we trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxies {
    /// None: the peer is the client.
    None,
    /// This many proxies append to X-Forwarded-For in front of us.
    Hops(usize),
    /// Proxies at these addresses.
    Networks(Vec<IpNet>),
}

/// OIDC settings.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// Where the signing keys are, when not from discovery.
    pub jwks_url: Option<String>,
    /// The claim naming the principal.
    pub principal_claim: String,
    /// Least time between two fetches of the keys.
    pub min_refresh: Duration,
}

/// Validated authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Accepted modes; empty means none (anonymous).
    pub modes: Vec<AuthMode>,
    /// `principal → key` pairs.
    pub api_keys: Vec<(String, SecretString)>,
    /// OIDC, when `jwt` is on.
    pub jwt: Option<JwtSettings>,
    /// How long a browser has for its `auth` frame.
    pub auth_timeout: Duration,
    /// Lower-cased host names (no port) browsers may use.
    pub public_hosts: Vec<String>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// The operators' address, if any.
    pub operator_addr: Option<SocketAddr>,
}

impl AuthConfig {
    /// Whether clients must prove who they are.
    pub fn required(&self) -> bool {
        !self.modes.is_empty()
    }

    /// Whether this mode is on.
    pub fn allows(&self, mode: AuthMode) -> bool {
        self.modes.contains(&mode)
    }
}

impl AuthArgs {
    /// Checks the modes against their settings; `addr` is where the server listens and
    /// `origins` the allowed browser origins (their hosts are public hosts).
    pub(super) fn validate(
        self,
        addr: SocketAddr,
        origins: &[String],
    ) -> Result<AuthConfig, ConfigError> {
        let mut modes = self.auth.clone();
        modes.sort_by_key(|m| *m as u8);
        modes.dedup();
        if modes.contains(&AuthMode::None) {
            if modes.len() > 1 {
                return Err(invalid(
                    "RAGCHAT_AUTH",
                    "none cannot be combined with other modes",
                ));
            }
            modes.clear();
        }
        if modes.is_empty() && !addr.ip().is_loopback() && !self.allow_anonymous {
            return Err(invalid(
                "RAGCHAT_AUTH",
                format!(
                    "is none, but RAGCHAT_ADDR={addr} is reachable from other machines: anyone \
                     could use the service (and the model behind it). Set RAGCHAT_AUTH to \
                     api_key, jwt or easy_auth, or RAGCHAT_ALLOW_ANONYMOUS=true for a demo"
                ),
            ));
        }
        let api_keys = api_keys(&modes, self.api_keys.as_ref())?;
        let jwt = self.jwt(&modes)?;
        if self.auth_timeout_secs == 0 || self.auth_timeout_secs > 60 {
            return Err(invalid(
                "RAGCHAT_AUTH_TIMEOUT_SECS",
                "must be between 1 and 60",
            ));
        }
        Ok(AuthConfig {
            public_hosts: public_hosts(&self.public_hosts, self.website_hostname, origins)?,
            trusted_proxies: trusted_proxies(&self.trusted_proxies)?,
            modes,
            api_keys,
            jwt,
            auth_timeout: Duration::from_secs(self.auth_timeout_secs),
            operator_addr: self.operator_addr,
        })
    }

    fn jwt(&self, modes: &[AuthMode]) -> Result<Option<JwtSettings>, ConfigError> {
        if !modes.contains(&AuthMode::Jwt) {
            return Ok(None);
        }
        let issuer = self.jwt_issuer.clone().ok_or_else(|| {
            invalid(
                "RAGCHAT_JWT_ISSUER",
                "is required when RAGCHAT_AUTH has jwt",
            )
        })?;
        check_url("RAGCHAT_JWT_ISSUER", &issuer)?;
        if let Some(url) = &self.jwt_jwks_url {
            check_url("RAGCHAT_JWT_JWKS_URL", url)?;
        }
        let audience = self.jwt_audience.clone().ok_or_else(|| {
            invalid(
                "RAGCHAT_JWT_AUDIENCE",
                "is required when RAGCHAT_AUTH has jwt",
            )
        })?;
        Ok(Some(JwtSettings {
            issuer,
            audience,
            jwks_url: self.jwt_jwks_url.clone(),
            principal_claim: self.jwt_principal_claim.clone(),
            min_refresh: Duration::from_secs(self.jwt_refresh_secs.clamp(1, 3600)),
        }))
    }
}

/// The key pairs, checked; never echoing a key.
fn api_keys(
    modes: &[AuthMode],
    given: Option<&SecretString>,
) -> Result<Vec<(String, SecretString)>, ConfigError> {
    const VAR: &str = "RAGCHAT_API_KEYS";
    if !modes.contains(&AuthMode::ApiKey) {
        return Ok(Vec::new());
    }
    let Some(given) = given else {
        return Err(invalid(VAR, "is required when RAGCHAT_AUTH has api_key"));
    };
    let mut keys = Vec::new();
    for (i, pair) in given.expose_secret().split(',').enumerate() {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let Some((name, key)) = pair.split_once('=') else {
            return Err(invalid(
                VAR,
                format!("entry {} is not principal=key", i + 1),
            ));
        };
        let (name, key) = (name.trim(), key.trim());
        if name.is_empty() || name.len() > 64 || !name.chars().all(principal_char) {
            return Err(invalid(
                VAR,
                format!(
                    "entry {}: the principal must be 1-64 characters of A-Z a-z 0-9 . _ @ -",
                    i + 1
                ),
            ));
        }
        if key.len() < 24
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        {
            return Err(invalid(
                VAR,
                format!(
                    "the key of {name:?} must be at least 24 characters of A-Z a-z 0-9 - _ . ~ \
                     (e.g. `openssl rand -base64 32 | tr '+/' '-_' | tr -d =`)"
                ),
            ));
        }
        keys.push((name.to_owned(), SecretString::from(key.to_owned())));
    }
    if keys.is_empty() {
        return Err(invalid(VAR, "holds no principal=key pair"));
    }
    Ok(keys)
}

fn principal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')
}

/// Lower-cased host names without ports: the given ones, or the defaults.
fn public_hosts(
    given: &[String],
    website: Option<String>,
    origins: &[String],
) -> Result<Vec<String>, ConfigError> {
    let mut hosts: Vec<String> = given
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    for host in &hosts {
        if host.contains(['/', ':', ' ']) {
            return Err(invalid(
                "RAGCHAT_PUBLIC_HOSTS",
                format!("{host:?} is not a host name; e.g. chat.example.com (no scheme or port)"),
            ));
        }
    }
    if hosts.is_empty() {
        hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
        hosts.extend(website.map(|w| w.trim().to_ascii_lowercase()));
        for origin in origins {
            if let Ok(url) = reqwest::Url::parse(origin)
                && let Some(host) = url.host_str()
            {
                hosts.push(host.to_ascii_lowercase());
            }
        }
    }
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

fn trusted_proxies(given: &[String]) -> Result<TrustedProxies, ConfigError> {
    const VAR: &str = "RAGCHAT_TRUSTED_PROXIES";
    let given: Vec<&str> = given
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    match given.as_slice() {
        [] => Ok(TrustedProxies::None),
        [hops] if hops.parse::<usize>().is_ok() => match hops.parse::<usize>() {
            Ok(0) => Ok(TrustedProxies::None),
            Ok(n) if n <= 8 => Ok(TrustedProxies::Hops(n)),
            _ => Err(invalid(VAR, "a hop count must be between 0 and 8")),
        },
        nets => nets
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(
                            VAR,
                            format!("{n:?} is neither a hop count nor a CIDR (e.g. 10.0.0.0/8)"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies::Networks),
    }
}
