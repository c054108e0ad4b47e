//! A remote JSON Web Key Set, fetched over verified TLS and cached, refreshed when a token names a
//! key id it does not know (key rotation), at most once per `min_refresh`.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    min_refresh: Duration,
    state: RwLock<(HashMap<String, DecodingKey>, Option<Instant>)>,
}

impl RemoteJwks {
    pub fn new(url: String, client: reqwest::Client) -> Self {
        RemoteJwks { url, client, min_refresh: Duration::from_secs(1), state: RwLock::new((HashMap::new(), None)) }
    }

    /// The key with this id, from the cache or a refreshed set.
    pub async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let last_fetch = match self.state.read() {
            Ok(s) => {
                if let Some(key) = s.0.get(kid) {
                    return Some(key.clone());
                }
                s.1
            }
            Err(_) => None,
        };
        if last_fetch.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return None;
        }
        let fetched = self.fetch().await;
        let mut state = self.state.write().ok()?;
        state.1 = Some(Instant::now());
        if let Some(keys) = fetched {
            state.0 = keys;
        }
        state.0.get(kid).cloned()
    }

    async fn fetch(&self) -> Option<HashMap<String, DecodingKey>> {
        let set: JwkSet = match self.client.get(&self.url).send().await {
            Ok(r) if r.status().is_success() => r.json().await.ok()?,
            Ok(r) => {
                log::warn!("JWKS {} answered {}", self.url, r.status());
                return None;
            }
            Err(e) => {
                log::warn!("JWKS {} fetch failed: {e}", self.url);
                return None;
            }
        };
        let keys =
            set.keys.iter().filter_map(|k| Some((k.common.key_id.clone()?, DecodingKey::from_jwk(k).ok()?))).collect();
        Some(keys)
    }
}
