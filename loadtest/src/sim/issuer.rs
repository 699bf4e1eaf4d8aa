//! A benchmark's identity provider: OIDC discovery and a JWKS for one ES256 key made at start,
//! and `GET /token?sub=…` minting a token for any subject. It holds the issuer still (like the
//! simulated model) so `make bench` can measure what validating a JWT per connection costs
//! ragchat. It signs anything for anyone: never point a real deployment at it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The audience of every token minted here (`RAGCHAT_JWT_AUDIENCE`).
pub const AUDIENCE: &str = "ragchat-bench";

const KID: &str = "bench-1";
/// Tokens live this long: longer than any benchmark.
const LIFETIME_SECS: u64 = 6 * 3600;

struct Inner {
    issuer: String,
    key: EncodingKey,
    jwks: JwkSet,
}

/// The issuer at `issuer` (its base URL, which is also the `iss` of its tokens).
#[derive(Clone)]
pub struct Issuer(Arc<Inner>);

impl Issuer {
    pub fn new(issuer: String) -> anyhow::Result<Self> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("generating the P-256 key"))?;
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut public = Jwk::from_encoding_key(&key, Algorithm::ES256)?;
        public.common.key_id = Some(KID.to_owned());
        Ok(Self(Arc::new(Inner {
            issuer,
            key,
            jwks: JwkSet { keys: vec![public] },
        })))
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", get(token))
            .with_state(self)
    }

    /// A token for `sub`, valid now.
    pub fn mint(&self, sub: &str) -> anyhow::Result<String> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            aud: &'a str,
            sub: &'a str,
            iat: u64,
            exp: u64,
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header = Header {
            kid: Some(KID.to_owned()),
            ..Header::new(Algorithm::ES256)
        };
        let claims = Claims {
            iss: &self.0.issuer,
            aud: AUDIENCE,
            sub,
            iat: now,
            exp: now + LIFETIME_SECS,
        };
        Ok(jsonwebtoken::encode(&header, &claims, &self.0.key)?)
    }
}

async fn discovery(State(issuer): State<Issuer>) -> Response {
    let base = &issuer.0.issuer;
    axum::Json(serde_json::json!({
        "issuer": base,
        "jwks_uri": format!("{base}/jwks"),
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
    .into_response()
}

async fn jwks(State(issuer): State<Issuer>) -> Response {
    axum::Json(issuer.0.jwks.clone()).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    sub: String,
}

async fn token(State(issuer): State<Issuer>, Query(q): Query<TokenQuery>) -> Response {
    match issuer.mint(&q.sub) {
        Ok(token) => token.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    #[test]
    fn minted_tokens_verify_against_the_published_key() {
        let issuer = Issuer::new("http://127.0.0.1:9".into()).expect("issuer");
        let token = issuer.mint("client-7").expect("token");
        let jwk = &issuer.0.jwks.keys[0];
        let key = DecodingKey::from_jwk(jwk).expect("decoding key");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&["http://127.0.0.1:9"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).expect("verifies");
        assert_eq!(data.claims["sub"], "client-7");
        assert_eq!(data.header.kid.as_deref(), Some(KID));
    }
}
