//! The closed sets of the configuration file, as serde enums: a wrong value is one error that
//! lists the allowed ones, and the rest of the code matches on variants, never on strings.

use serde::Deserialize;

/// How a request's backend is chosen among an upstream's healthy ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Each backend in turn (by weight): the even spread most APIs want.
    #[default]
    RoundRobin,
    /// The same partner (its certificate, or its source address without one) to the same
    /// backend while it is healthy: for APIs that keep per-client state or caches.
    ConsistentHash,
}

/// What an active health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// A TCP connection is accepted: cannot see a hung process, whose kernel still accepts.
    Tcp,
    /// An HTTP(S) request with an expected status: sees a process that no longer answers.
    #[default]
    Http,
}

/// What to do with a connection whose SNI names no configured host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSni {
    /// Terminate TLS with the default certificate (the HTTP layer then answers 404 or 421).
    #[default]
    Terminate,
    Close,
}

/// What an expired client CRL (its `nextUpdate` passed: a publisher that stopped) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrlExpired {
    /// OpenSSL's answer: every certificate of that issuer is refused. Fail closed, and loudly.
    #[default]
    Refuse,
    /// Accept certificates the expired CRL does not list, and raise the alarm on each.
    Keep,
}

/// The lowest TLS version accepted from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    /// Accepts `"1.2"` and `1.2` alike: YAML reads an unquoted `1.2` as a number.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TlsVersionVisitor)
    }
}

struct TlsVersionVisitor;

impl serde::de::Visitor<'_> for TlsVersionVisitor {
    type Value = TlsVersion;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("`1.2` or `1.3`")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TlsVersion, E> {
        match v {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            _ => Err(E::custom(format!("unknown variant `{v}`, expected `1.2` or `1.3`"))),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TlsVersion, E> {
        self.visit_str(&v.to_string())
    }
}

/// How the identity server answers introspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// The reference's protocol: `Accept: application/jwt`, 200 = the access token as a JWT, 204 = inactive.
    #[default]
    Jwt,
    /// RFC 7662 JSON; the gateway issues the JWT.
    Json,
    /// RFC 9701 signed JSON, verified against the identity server's JWKS; the gateway issues the JWT.
    Rfc9701,
}

/// Algorithms of the JWTs the gateway signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum SigningAlg {
    #[default]
    PS256,
    ES256,
}

impl std::fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningAlg::PS256 => "PS256",
            SigningAlg::ES256 => "ES256",
        })
    }
}

/// What a per-route rate limit counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// The client certificate's `x5t#S256`: one bucket per certificate.
    #[default]
    Thumbprint,
    /// The certificate's subject DN: one bucket per partner across its certificates.
    Subject,
}

/// How the gateway authenticates to the introspection endpoint (RFC 7591 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 client assertion signed with the configured key.
    PrivateKeyJwt,
    /// RFC 8705 client certificate on the TLS connection to the identity server.
    TlsClientAuth,
}

/// What a token without `aud` means when `audiences` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingAudience {
    /// 401: a token that names no API is not accepted for this one.
    #[default]
    Refuse,
    /// The identity server issues tokens without `aud`: treat them as meant for `audiences`.
    Accept,
}

/// JWS algorithms accepted from the identity server (never `none`, never HMAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwsAlg {
    PS256,
    PS384,
    PS512,
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwsAlg {
    pub fn algorithm(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            JwsAlg::PS256 => A::PS256,
            JwsAlg::PS384 => A::PS384,
            JwsAlg::PS512 => A::PS512,
            JwsAlg::RS256 => A::RS256,
            JwsAlg::RS384 => A::RS384,
            JwsAlg::RS512 => A::RS512,
            JwsAlg::ES256 => A::ES256,
            JwsAlg::ES384 => A::ES384,
            JwsAlg::EdDSA => A::EdDSA,
        }
    }
}

/// The request methods the gateway implements; any other method is answered 501 before routing.
/// Written in upper case, as methods are case-sensitive (RFC 9110 §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum HttpMethod {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OPTIONS,
}

impl HttpMethod {
    pub const ALL: [HttpMethod; 7] = [
        HttpMethod::GET,
        HttpMethod::HEAD,
        HttpMethod::POST,
        HttpMethod::PUT,
        HttpMethod::PATCH,
        HttpMethod::DELETE,
        HttpMethod::OPTIONS,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::GET => "GET",
            HttpMethod::HEAD => "HEAD",
            HttpMethod::POST => "POST",
            HttpMethod::PUT => "PUT",
            HttpMethod::PATCH => "PATCH",
            HttpMethod::DELETE => "DELETE",
            HttpMethod::OPTIONS => "OPTIONS",
        }
    }

    /// RFC 9110 §9.2.2: sending it twice has the effect of sending it once.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, HttpMethod::POST | HttpMethod::PATCH)
    }

    /// The implemented method spelled exactly `name`, if any.
    pub fn exact(name: &str) -> Option<HttpMethod> {
        HttpMethod::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// What the scope filter does with a method that its `methods` map does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeDefault {
    /// The route's `required` scopes are enough.
    #[default]
    Required,
    /// Refused (403): only the listed methods are granted by any scope.
    Deny,
}

/// How access-log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessFormat {
    /// `key=value` pairs.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}
