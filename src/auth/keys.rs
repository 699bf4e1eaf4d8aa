//! API keys: held as SHA-256 digests (the keys themselves are not kept in memory after start),
//! compared in constant time against every configured key, so neither a match nor its position
//! shows in the time an answer takes.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured keys, by digest, each with the principal it names.
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Digests of `principal → key` pairs.
    pub fn new(pairs: &[(String, SecretString)]) -> Self {
        Self {
            keys: pairs
                .iter()
                .map(|(name, key)| (name.clone(), digest(key.expose_secret())))
                .collect(),
        }
    }

    /// The principal `key` names, if it is one of ours. Every stored digest is compared.
    pub fn verify(&self, key: &str) -> Option<&str> {
        let presented = digest(key);
        let mut found = None;
        for (name, stored) in &self.keys {
            if bool::from(stored.ct_eq(&presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}
