//! The per-route rate limit: a token bucket per partner (certificate thumbprint or subject) on
//! every request of the route, cached token or not. Over the limit the answer is 429 with
//! `Retry-After`.

use super::{Filter, FilterState, Outcome};
use crate::config::RateKey;
use crate::metrics;
use crate::reason::{Limit, SharedCheck};
use crate::request::limit::{retry_after, Denied, SharedLimit};
use crate::request::respond::Refusal;
use async_trait::async_trait;
use pingora_http::RequestHeader;

pub struct RateLimit {
    pub limiter: SharedLimit,
    pub key: RateKey,
}

#[async_trait]
impl Filter for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    async fn run(&self, _req: &RequestHeader, state: &mut FilterState) -> Outcome {
        // With neither a certificate nor an address there is nothing to count by: refuse.
        let Some(partner) = state.partner(self.key) else {
            return Outcome::Respond(Refusal::RateLimited { limit: Limit::Route, retry_after: 1 });
        };
        match self.limiter.take(partner).await {
            Ok(()) => Outcome::Continue,
            Err(Denied::Over(wait)) => {
                metrics::rate_limited(Limit::Route);
                Outcome::Respond(Refusal::RateLimited { limit: Limit::Route, retry_after: retry_after(wait) })
            }
            Err(Denied::Unavailable) => Outcome::Respond(Refusal::SharedStateUnavailable(SharedCheck::RateLimit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateConfig;
    use crate::request::filters::test_support::{client, req};

    #[tokio::test]
    async fn each_partner_has_its_own_bucket() {
        let limiter = SharedLimit::new(RateConfig { per_second: 1, burst: 2 }, "route", None);
        let f = RateLimit { limiter, key: RateKey::Thumbprint };
        let r = req("GET", "/", &[]);
        let mut a = FilterState { client: Some(client("a")), ..Default::default() };
        let mut b = FilterState { client: Some(client("b")), ..Default::default() };
        assert_eq!(f.run(&r, &mut a).await, Outcome::Continue);
        assert_eq!(f.run(&r, &mut a).await, Outcome::Continue);
        assert!(matches!(f.run(&r, &mut a).await, Outcome::Respond(Refusal::RateLimited { retry_after: 1, .. })));
        assert_eq!(f.run(&r, &mut b).await, Outcome::Continue, "another partner is not affected");
    }
}
