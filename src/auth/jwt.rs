//! OIDC bearer tokens (Microsoft Entra ID or any issuer): RS256 or ES256 only, signed by a key of
//! the issuer's JWKS (found through its discovery document), `exp`, `nbf`, `iss` and `aud`
//! checked with 60 s of leeway. The keys are cached; an unknown `kid` fetches them again, at
//! most once per `RAGCHAT_JWT_REFRESH_SECS`, so a flood of made-up key ids cannot make us hammer
//! the issuer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use tokio::sync::{Mutex, RwLock};

use super::{AuthError, Principal};
use crate::config::JwtSettings;

/// Keys older than this are fetched again (issuers rotate them).
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;
/// Bound on each request to the issuer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Verifies tokens of one issuer for one audience.
pub struct JwtVerifier {
    settings: JwtSettings,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// When the keys were last fetched; held while fetching, so fetches never overlap.
    fetched: Mutex<Option<Instant>>,
}

impl JwtVerifier {
    /// A verifier for `settings`; fetches nothing yet.
    pub fn new(settings: JwtSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            settings,
            http,
            keys: RwLock::new(HashMap::new()),
            fetched: Mutex::new(None),
        }
    }

    /// The principal a token names, if the token is good.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let refused = |why: &str| AuthError::Refused(why.to_owned());
        let header = decode_header(token).map_err(|e| refused(&format!("JWT header: {e}")))?;
        // Only asymmetric signatures: a token signed with HS256 using our public key, or one
        // claiming `none`, never reaches a key.
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(refused(&format!("JWT algorithm {:?}", header.alg)));
        }
        let kid = header.kid.unwrap_or_default();
        let key = match self.key(&kid).await {
            Some(key) => key,
            None => {
                self.refresh(false).await?;
                self.key(&kid)
                    .await
                    .ok_or_else(|| refused(&format!("unknown JWT key id {kid:?}")))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
            .map_err(|e| refused(&reason(e.kind())))?;
        let claim = &self.settings.principal_claim;
        let id = data
            .claims
            .get(claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| refused(&format!("JWT without a {claim:?} claim")))?;
        Ok(Principal::new("jwt", id))
    }

    /// The key for `kid` (any key when the token names none and there is one), fetching the
    /// keys first when there are none or they are old.
    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let stale = self
            .fetched
            .lock()
            .await
            .is_none_or(|at| at.elapsed() > MAX_AGE);
        if stale && let Err(e) = self.refresh(true).await {
            tracing::warn!(error = %e, "cannot fetch the JWT signing keys");
        }
        let keys = self.keys.read().await;
        match keys.get(kid) {
            Some(key) => Some(key.clone()),
            None if kid.is_empty() && keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    /// Fetches the keys again, unless they were fetched less than `min_refresh` ago (`stale`
    /// set: the cache is empty or old, fetch regardless).
    async fn refresh(&self, stale: bool) -> Result<(), AuthError> {
        let mut fetched = self.fetched.lock().await;
        if !stale && fetched.is_some_and(|at| at.elapsed() < self.settings.min_refresh) {
            return Ok(());
        }
        // Set before fetching: a failing issuer is asked again only after MIN_REFRESH.
        *fetched = Some(Instant::now());
        let keys = self.fetch().await?;
        tracing::info!(keys = keys.len(), issuer = %self.settings.issuer, "fetched the JWT signing keys");
        *self.keys.write().await = keys;
        Ok(())
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, AuthError> {
        let url = match &self.settings.jwks_url {
            Some(url) => url.clone(),
            None => self.jwks_url_from_discovery().await?,
        };
        let set: JwkSet = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|e| AuthError::Unavailable(format!("JWKS at {url}: {e}")))?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((jwk.common.key_id.clone().unwrap_or_default(), key))
            })
            .collect())
    }

    async fn jwks_url_from_discovery(&self) -> Result<String, AuthError> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let doc: serde_json::Value = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|e| AuthError::Unavailable(format!("{url}: {e}")))?;
        let named = doc["issuer"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/');
        if named != issuer {
            return Err(AuthError::Unavailable(format!(
                "{url} names issuer {named:?}, not RAGCHAT_JWT_ISSUER"
            )));
        }
        doc["jwks_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| AuthError::Unavailable(format!("{url} has no jwks_uri")))
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, AuthError> {
        let unavailable = |e: &dyn std::fmt::Display| AuthError::Unavailable(format!("{url}: {e}"));
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        if !response.status().is_success() {
            return Err(unavailable(&response.status()));
        }
        Ok(response
            .bytes()
            .await
            .map_err(|e| unavailable(&e))?
            .to_vec())
    }

    /// Whether the signing keys can be had (readiness).
    pub async fn ping(&self) -> Result<(), AuthError> {
        if self.keys.read().await.is_empty() {
            self.refresh(false).await?;
        }
        if self.keys.read().await.is_empty() {
            return Err(AuthError::Unavailable(
                "the issuer's JWKS holds no usable key".into(),
            ));
        }
        Ok(())
    }
}

/// Why a token was refused, for the log.
fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "JWT expired".into(),
        ErrorKind::ImmatureSignature => "JWT not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "JWT from another issuer".into(),
        ErrorKind::InvalidAudience => "JWT for another audience".into(),
        ErrorKind::InvalidSignature => "JWT signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => "JWT algorithm does not match its key".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("JWT without {c}"),
        other => format!("JWT: {other:?}"),
    }
}
