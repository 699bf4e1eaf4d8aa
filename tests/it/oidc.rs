//! A small OIDC issuer for the JWT tests: a discovery document and a JWKS over real HTTP, with
//! ES256 and RS256 keys the test makes (aws-lc-rs), tokens signed with them, and key rotation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// One signing key: private for the test, public in the JWKS.
pub struct Key {
    pub kid: String,
    pub alg: Algorithm,
    pub private: EncodingKey,
    pub public: Jwk,
}

impl Key {
    /// A new P-256 key (ES256).
    pub fn es256(kid: &str) -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("EC key");
        let private = EncodingKey::from_ec_der(pkcs8.as_ref());
        Self::with(kid, Algorithm::ES256, private)
    }

    /// A new 2048-bit RSA key (RS256).
    pub fn rs256(kid: &str) -> Self {
        let pair =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key");
        let der = pair.as_der().expect("PKCS#8");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let private = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA PEM");
        Self::with(kid, Algorithm::RS256, private)
    }

    fn with(kid: &str, alg: Algorithm, private: EncodingKey) -> Self {
        let mut public = Jwk::from_encoding_key(&private, alg).expect("public JWK");
        public.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            alg,
            private,
            public,
        }
    }

    /// A token with these claims, signed with this key.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.private).expect("signs")
    }
}

/// The issuer: its URL, its published keys, and how often its JWKS was fetched.
pub struct Issuer {
    pub url: String,
    jwks: Arc<Mutex<JwkSet>>,
    fetches: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Published {
    issuer: String,
    jwks: Arc<Mutex<JwkSet>>,
    fetches: Arc<AtomicUsize>,
}

impl Issuer {
    /// Serves discovery and a JWKS holding `keys` on 127.0.0.1:0.
    pub async fn start(keys: &[&Key]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}");
        let jwks = Arc::new(Mutex::new(JwkSet {
            keys: keys.iter().map(|k| k.public.clone()).collect(),
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let published = Published {
            issuer: url.clone(),
            jwks: Arc::clone(&jwks),
            fetches: Arc::clone(&fetches),
        };
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(p): State<Published>| async move {
                    Json(serde_json::json!({
                        "issuer": p.issuer,
                        "jwks_uri": format!("{}/keys", p.issuer),
                    }))
                }),
            )
            .route(
                "/keys",
                get(|State(p): State<Published>| async move {
                    p.fetches.fetch_add(1, Ordering::SeqCst);
                    let set = p.jwks.lock().expect("lock").clone();
                    Json(set)
                }),
            )
            .with_state(published);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, jwks, fetches }
    }

    /// Publishes `keys` instead (a key rotation).
    pub fn rotate(&self, keys: &[&Key]) {
        *self.jwks.lock().expect("lock") = JwkSet {
            keys: keys.iter().map(|k| k.public.clone()).collect(),
        };
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
