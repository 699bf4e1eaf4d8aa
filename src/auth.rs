//! Who is asking: the [`Principal`] a socket acts for, proven by an API key, an OIDC token or
//! Azure App Service Authentication (Easy Auth) — or the anonymous principal when the service
//! needs no authentication. A client that fails learns only `unauthorized`; the reason goes to
//! the log.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use crate::config::{AuthConfig, AuthMode};

mod jwt;
mod keys;

pub use jwt::JwtVerifier;
pub use keys::ApiKeys;

/// Whom a socket acts for: the owner of its conversations and the subject of its limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(String);

impl Principal {
    /// Everyone, when the service needs no authentication.
    pub fn anonymous() -> Self {
        Self("anonymous".into())
    }

    /// A principal of this kind (`key`, `jwt`, `easyauth`) and id.
    pub fn new(kind: &str, id: &str) -> Self {
        Self(format!("{kind}:{id}"))
    }

    /// Its id, as recorded.
    pub fn id(&self) -> &str {
        &self.0
    }

    /// Whether this is the anonymous principal.
    pub fn is_anonymous(&self) -> bool {
        self.0 == "anonymous"
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a credential was refused. Clients only ever see `unauthorized`; this is for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was given.
    #[error("no credential")]
    Missing,
    /// The credential is wrong, expired, or not for us.
    #[error("refused credential: {0}")]
    Refused(String),
    /// The credential could not be checked (the issuer's keys cannot be fetched).
    #[error("cannot check the credential: {0}")]
    Unavailable(String),
}

/// Checks credentials in the modes the configuration allows.
pub struct Authenticator {
    modes: Vec<AuthMode>,
    keys: Option<ApiKeys>,
    jwt: Option<JwtVerifier>,
}

/// The Easy Auth header naming the signed-in user (App Service strips it from clients'
/// requests, and only App Service sets it).
const EASY_AUTH_ID: &str = "x-ms-client-principal-id";

impl Authenticator {
    /// The checks `config` asks for; does no I/O (the JWKS is fetched when first needed).
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            modes: config.modes.clone(),
            keys: (!config.api_keys.is_empty()).then(|| ApiKeys::new(&config.api_keys)),
            jwt: config.jwt.clone().map(JwtVerifier::new),
        }
    }

    /// Whether clients must prove who they are.
    pub fn required(&self) -> bool {
        !self.modes.is_empty()
    }

    /// The principal an HTTP request proves: `Authorization: Bearer …` (a key or a JWT), or, in
    /// Easy Auth mode only, the platform's principal headers. `Ok(None)` when it carries no
    /// credential; anonymous when none is needed.
    pub async fn from_headers(&self, headers: &HeaderMap) -> Result<Option<Principal>, AuthError> {
        if !self.required() {
            return Ok(Some(Principal::anonymous()));
        }
        if let Some(value) = headers.get(AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .ok_or_else(|| AuthError::Refused("Authorization is not `Bearer TOKEN`".into()))?;
            return self.from_token(token.trim()).await.map(Some);
        }
        if self.modes.contains(&AuthMode::EasyAuth)
            && let Some(id) = headers.get(EASY_AUTH_ID)
        {
            let id = id
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|id| !id.is_empty() && id.len() <= 128)
                .ok_or_else(|| AuthError::Refused("malformed Easy Auth principal id".into()))?;
            return Ok(Some(Principal::new("easyauth", id)));
        }
        Ok(None)
    }

    /// The principal a bearer token proves (an `auth` frame's, or an `Authorization` header's):
    /// a JWT when it looks like one and `jwt` is on, else an API key.
    pub async fn from_token(&self, token: &str) -> Result<Principal, AuthError> {
        if !self.required() {
            return Ok(Principal::anonymous());
        }
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > 16 * 1024 {
            return Err(AuthError::Refused("token longer than 16 KiB".into()));
        }
        let looks_like_jwt = token.split('.').count() == 3;
        match (&self.jwt, &self.keys) {
            (Some(jwt), _) if looks_like_jwt => jwt.verify(token).await,
            (_, Some(keys)) => keys
                .verify(token)
                .map(|name| Principal::new("key", name))
                .ok_or_else(|| AuthError::Refused("unknown API key".into())),
            (Some(_), None) => Err(AuthError::Refused("not a JWT".into())),
            (None, None) => Err(AuthError::Refused(
                "tokens are not accepted (RAGCHAT_AUTH=easy_auth)".into(),
            )),
        }
    }

    /// Readiness: whether the issuer's keys can be had (JWT mode), as an error to show.
    pub async fn ping(&self) -> Result<(), AuthError> {
        match &self.jwt {
            Some(jwt) => jwt.ping().await,
            None => Ok(()),
        }
    }

    /// What `/health` shows: the modes, no secrets.
    pub fn describe(&self) -> String {
        if self.modes.is_empty() {
            return "none (anonymous)".into();
        }
        let modes: Vec<String> = self
            .modes
            .iter()
            .map(|m| {
                use clap::ValueEnum;
                m.to_possible_value()
                    .map(|v| v.get_name().to_owned())
                    .unwrap_or_default()
            })
            .collect();
        modes.join(",")
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use secrecy::SecretString;

    use super::*;
    use crate::config::TrustedProxies;

    fn config(modes: &[AuthMode]) -> AuthConfig {
        AuthConfig {
            modes: modes.to_vec(),
            api_keys: vec![
                (
                    "alice".into(),
                    SecretString::from("k-alice-0123456789abcdefghij"),
                ),
                (
                    "alice".into(),
                    SecretString::from("k-alice-next-0123456789abcdef"),
                ),
                (
                    "bot".into(),
                    SecretString::from("k-bot-0123456789abcdefghijklm"),
                ),
            ],
            jwt: None,
            auth_timeout: std::time::Duration::from_secs(5),
            public_hosts: Vec::new(),
            trusted_proxies: TrustedProxies::None,
            operator_addr: None,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[tokio::test]
    async fn api_keys_name_their_principal_and_two_keys_may_be_valid_at_once() {
        let keys = config(&[AuthMode::ApiKey]);
        let principal = |t: &'static str| auth_for(&keys, t);
        assert_eq!(
            principal("k-alice-0123456789abcdefghij").await,
            Ok("key:alice".into())
        );
        assert_eq!(
            principal("k-alice-next-0123456789abcdef").await,
            Ok("key:alice".into())
        );
        assert_eq!(
            principal("k-bot-0123456789abcdefghijklm").await,
            Ok("key:bot".into())
        );
        let near_miss = principal("k-bot-0123456789abcdefghijklX").await;
        assert!(
            matches!(near_miss, Err(AuthError::Refused(_))),
            "{near_miss:?}"
        );
        assert_eq!(principal("").await, Err(AuthError::Missing));
        let auth = Authenticator::new(&keys);
        let from = auth
            .from_headers(&headers(&[(
                "authorization",
                "Bearer k-bot-0123456789abcdefghijklm",
            )]))
            .await;
        assert_eq!(from, Ok(Some(Principal::new("key", "bot"))));
        let wrong = auth
            .from_headers(&headers(&[("authorization", "Basic Ym90OmJvdA==")]))
            .await;
        assert!(matches!(wrong, Err(AuthError::Refused(_))));
        assert_eq!(auth.from_headers(&HeaderMap::new()).await, Ok(None));
    }

    async fn auth_for(config: &AuthConfig, token: &str) -> Result<String, AuthError> {
        Authenticator::new(config)
            .from_token(token)
            .await
            .map(|p| p.id().to_owned())
    }

    #[tokio::test]
    async fn easy_auth_headers_count_only_in_easy_auth_mode() {
        let h = headers(&[(
            "x-ms-client-principal-id",
            "00000000-aaaa-bbbb-cccc-000000000001",
        )]);
        let easy = Authenticator::new(&config(&[AuthMode::EasyAuth]));
        assert_eq!(
            easy.from_headers(&h).await,
            Ok(Some(Principal::new(
                "easyauth",
                "00000000-aaaa-bbbb-cccc-000000000001"
            )))
        );
        let keys = Authenticator::new(&config(&[AuthMode::ApiKey]));
        assert_eq!(
            keys.from_headers(&h).await,
            Ok(None),
            "a forged header is no credential"
        );
        let none = Authenticator::new(&config(&[]));
        assert_eq!(
            none.from_headers(&h).await,
            Ok(Some(Principal::anonymous()))
        );
    }
}
