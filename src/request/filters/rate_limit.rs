//! The per-route rate limit: a token bucket per partner (certificate thumbprint or subject) on
//! every request of the route, cached token or not. Over the limit the answer is 429 with
//! `Retry-After`.

use super::{BuildContext, BuildError, CheckContext, Filter, FilterState, Outcome, Section};
use crate::config::{Problem, RateConfig, RateError, RateKey};
use crate::metrics;
use crate::reason::{Limit, SharedCheck};
use crate::request::limit::{retry_after, Denied, SharedLimit};
use crate::request::respond::Refusal;
use async_trait::async_trait;
use pingora_http::RequestHeader;
use serde::Deserialize;

/// The `rate_limit` section: a token bucket per partner on every request of the route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub per_second: u32,
    pub burst: Option<u32>,
    #[serde(default)]
    pub key: RateKey,
}

impl Config {
    /// The bucket, or every value of it that cannot be used.
    pub fn validate(&self) -> Result<RateConfig, Vec<RateError>> {
        match RateConfig::checked(self.per_second, self.burst) {
            (rate, problems) if problems.is_empty() => Ok(rate),
            (_, problems) => Err(problems),
        }
    }
}

impl Section for Config {
    fn check(&self, _ctx: &CheckContext) -> Vec<Problem> {
        let problems = self.validate().err().unwrap_or_default();
        problems.into_iter().map(|e| Problem::new(format!("rate_limit.{}", e.key()), e)).collect()
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Filter>, BuildError> {
        // Checked at load; the bucket is usable (each value at least 1) whatever was written.
        let (rate, _) = RateConfig::checked(self.per_second, self.burst);
        Ok(Box::new(RateLimit { limiter: SharedLimit::new(rate, ctx.route, ctx.parts.cluster.clone()), key: self.key }))
    }
}

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
