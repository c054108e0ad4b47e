//! Every reason and label word the gateway writes: why a request was refused (with its status), why
//! a connection was cut, why a handshake was refused, how a tunnel, an upstream attempt, a DPoP
//! proof, an introspection call, a cache lookup or a shared-state call ended.
//!
//! Each family is one enum; each variant's word is spelled once, in the family's `as_str`, and that
//! word is what the access log, the metric label and the span attribute carry, so no reason can be
//! written two ways. Each family lists its variants in `ALL` (or `all()`), which
//! `tests/docs_reasons.rs` compares with `docs/reasons.md` both ways.
//!
//! This module sits at the bottom of the import graph: it names nothing of the gateway's own.
//! Route, partner, upstream and backend names are configured data, not reasons: they stay strings.

use serde::{Serialize, Serializer};

/// Why the gateway answered a request itself: the access line's `reason=`, the `reason` label of
/// `gateway_refusals_total` and `gateway_partner_refusals_total`, the span's `mtls_gateway.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NoToken,
    InsufficientScope,
    MethodDenied,
    OriginNotAllowed,
    NoRoute,
    MethodNotAllowed,
    MisdirectedRequest,
    BodyTooLarge,
    HeaderTooLarge,
    MethodNotImplemented,
    UpstreamUnavailable,
    NoHealthyBackend,
    ClusterUnavailable,
    UpstreamTimeout,
    /// 401 `invalid_token`.
    Token(Token),
    /// 401 `invalid_dpop_proof`, or `use_dpop_nonce`.
    Proof(Proof),
    /// 400 `invalid_request` about the token's transport.
    Request(Request),
    /// 400: a request a server may misread.
    BadRequest(BadRequest),
    /// 503: the identity server is down.
    IdentityDown(IdentityDown),
    /// 502: the identity server's answer cannot be used.
    IdentityAnswer(IdentityAnswer),
    /// 429: the limit that was reached.
    RateLimited(Limit),
    /// 401 or 503: the client certificate's revocation status (OCSP, fetched CRLs).
    Certificate(CertStatus),
}

impl Reason {
    const FIXED: &'static [Reason] = &[
        Reason::NoToken,
        Reason::InsufficientScope,
        Reason::MethodDenied,
        Reason::OriginNotAllowed,
        Reason::NoRoute,
        Reason::MethodNotAllowed,
        Reason::MisdirectedRequest,
        Reason::BodyTooLarge,
        Reason::HeaderTooLarge,
        Reason::MethodNotImplemented,
        Reason::UpstreamUnavailable,
        Reason::NoHealthyBackend,
        Reason::ClusterUnavailable,
        Reason::UpstreamTimeout,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NoToken => "no_token",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::MethodDenied => "method_denied",
            Reason::OriginNotAllowed => "origin_not_allowed",
            Reason::NoRoute => "no_route",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::MisdirectedRequest => "misdirected_request",
            Reason::BodyTooLarge => "body_too_large",
            Reason::HeaderTooLarge => "header_too_large",
            Reason::MethodNotImplemented => "method_not_implemented",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::NoHealthyBackend => "no_healthy_backend",
            Reason::ClusterUnavailable => "cluster_unavailable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::Token(r) => r.as_str(),
            Reason::Proof(r) => r.as_str(),
            Reason::Request(r) => r.as_str(),
            Reason::BadRequest(r) => r.as_str(),
            Reason::IdentityDown(r) => r.as_str(),
            Reason::IdentityAnswer(r) => r.as_str(),
            Reason::RateLimited(r) => r.as_str(),
            Reason::Certificate(r) => r.as_str(),
        }
    }

    /// The HTTP status the client reads with this reason.
    pub const fn status(self) -> u16 {
        match self {
            Reason::Request(_) | Reason::BadRequest(_) => 400,
            Reason::NoToken | Reason::Token(_) | Reason::Proof(_) => 401,
            Reason::InsufficientScope | Reason::MethodDenied | Reason::OriginNotAllowed => 403,
            Reason::NoRoute => 404,
            Reason::MethodNotAllowed => 405,
            Reason::BodyTooLarge => 413,
            Reason::MisdirectedRequest => 421,
            Reason::RateLimited(_) => 429,
            Reason::HeaderTooLarge => 431,
            Reason::MethodNotImplemented => 501,
            Reason::UpstreamUnavailable | Reason::IdentityAnswer(_) => 502,
            Reason::IdentityDown(_) | Reason::ClusterUnavailable | Reason::NoHealthyBackend => 503,
            Reason::UpstreamTimeout => 504,
            Reason::Certificate(r) => r.status(),
        }
    }

    /// Every refusal reason, each family's in its order.
    pub fn all() -> impl Iterator<Item = Reason> {
        let fixed = Reason::FIXED.iter().copied();
        fixed
            .chain(Token::ALL.iter().map(|r| Reason::Token(*r)))
            .chain(Proof::ALL.iter().map(|r| Reason::Proof(*r)))
            .chain(Request::ALL.iter().map(|r| Reason::Request(*r)))
            .chain(BadRequest::ALL.iter().map(|r| Reason::BadRequest(*r)))
            .chain(IdentityDown::ALL.iter().map(|r| Reason::IdentityDown(*r)))
            .chain(IdentityAnswer::ALL.iter().map(|r| Reason::IdentityAnswer(*r)))
            .chain(Limit::ALL.iter().map(|r| Reason::RateLimited(*r)))
            .chain(CertStatus::ALL.iter().map(|r| Reason::Certificate(*r)))
    }
}

/// Why a token was refused (401 `invalid_token`): a check of its own, of its binding, or of how it
/// was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token {
    InactiveToken,
    Expired,
    NotYetValid,
    BadType,
    NoAudience,
    BadAudience,
    DpopTokenWithoutJkt,
    MalformedAuthorization,
    NotBearer,
    MalformedToken,
    NoTokenClaims,
    TokenNotBound,
    NoClientCertificate,
    CertificateMismatch,
    CertificateBindingNotAccepted,
    DpopBindingNotAccepted,
    DpopTokenAsBearer,
    BearerTokenAsDpop,
    DpopKeyMismatch,
    CertificateRevoked,
    /// The trusted hop's header holds no certificate the gateway can read.
    ForwardedCertificateMalformed,
    /// The certificate the trusted hop forwarded fails the gateway's own verification.
    ForwardedCertificateRefused,
}

impl Token {
    pub const ALL: &'static [Token] = &[
        Token::InactiveToken,
        Token::Expired,
        Token::NotYetValid,
        Token::BadType,
        Token::NoAudience,
        Token::BadAudience,
        Token::DpopTokenWithoutJkt,
        Token::MalformedAuthorization,
        Token::NotBearer,
        Token::MalformedToken,
        Token::NoTokenClaims,
        Token::TokenNotBound,
        Token::NoClientCertificate,
        Token::CertificateMismatch,
        Token::CertificateBindingNotAccepted,
        Token::DpopBindingNotAccepted,
        Token::DpopTokenAsBearer,
        Token::BearerTokenAsDpop,
        Token::DpopKeyMismatch,
        Token::CertificateRevoked,
        Token::ForwardedCertificateMalformed,
        Token::ForwardedCertificateRefused,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Token::InactiveToken => "inactive_token",
            Token::Expired => "expired",
            Token::NotYetValid => "not_yet_valid",
            Token::BadType => "bad_type",
            Token::NoAudience => "no_audience",
            Token::BadAudience => "bad_audience",
            Token::DpopTokenWithoutJkt => "dpop_token_without_jkt",
            Token::MalformedAuthorization => "malformed_authorization",
            Token::NotBearer => "not_bearer",
            Token::MalformedToken => "malformed_token",
            Token::NoTokenClaims => "no_token_claims",
            Token::TokenNotBound => "token_not_bound",
            Token::NoClientCertificate => "no_client_certificate",
            Token::CertificateMismatch => "certificate_mismatch",
            Token::CertificateBindingNotAccepted => "certificate_binding_not_accepted",
            Token::DpopBindingNotAccepted => "dpop_binding_not_accepted",
            Token::DpopTokenAsBearer => "dpop_token_as_bearer",
            Token::BearerTokenAsDpop => "bearer_token_as_dpop",
            Token::DpopKeyMismatch => "dpop_key_mismatch",
            Token::CertificateRevoked => "certificate_revoked",
            Token::ForwardedCertificateMalformed => "forwarded_certificate_malformed",
            Token::ForwardedCertificateRefused => "forwarded_certificate_refused",
        }
    }
}

/// Why a DPoP proof was refused (RFC 9449 §4.3): 401 `invalid_dpop_proof`, or `use_dpop_nonce`
/// when it lacks a nonce this gateway issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proof {
    Missing,
    Multiple,
    Malformed,
    Typ,
    Alg,
    Jwk,
    PrivateKey,
    Signature,
    Htm,
    Htu,
    Iat,
    Jti,
    Replayed,
    Ath,
    /// No nonce, or one this gateway did not issue or that expired.
    Nonce,
}

impl Proof {
    pub const ALL: &'static [Proof] = &[
        Proof::Missing,
        Proof::Multiple,
        Proof::Malformed,
        Proof::Typ,
        Proof::Alg,
        Proof::Jwk,
        Proof::PrivateKey,
        Proof::Signature,
        Proof::Htm,
        Proof::Htu,
        Proof::Iat,
        Proof::Jti,
        Proof::Replayed,
        Proof::Ath,
        Proof::Nonce,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Proof::Missing => "dpop_proof_missing",
            Proof::Multiple => "dpop_proof_multiple",
            Proof::Malformed => "dpop_proof_malformed",
            Proof::Typ => "dpop_bad_typ",
            Proof::Alg => "dpop_bad_alg",
            Proof::Jwk => "dpop_bad_jwk",
            Proof::PrivateKey => "dpop_private_key",
            Proof::Signature => "dpop_bad_signature",
            Proof::Htm => "dpop_htm_mismatch",
            Proof::Htu => "dpop_htu_mismatch",
            Proof::Iat => "dpop_iat_out_of_window",
            Proof::Jti => "dpop_jti_missing",
            Proof::Replayed => "dpop_replayed",
            Proof::Ath => "dpop_ath_mismatch",
            Proof::Nonce => "use_dpop_nonce",
        }
    }
}

/// A token sent in a way RFC 6750 forbids (400 `invalid_request`). The word is also the
/// challenge's `error_description` and the body's message, so it reads as a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    TokenInQuery,
    SeveralAuthorizations,
}

impl Request {
    pub const ALL: &'static [Request] = &[Request::TokenInQuery, Request::SeveralAuthorizations];

    pub const fn as_str(self) -> &'static str {
        match self {
            Request::TokenInQuery => "access tokens in the query string are not accepted",
            Request::SeveralAuthorizations => "more than one Authorization header",
        }
    }
}

/// The ways a request can be malformed (400, no challenge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadRequest {
    NonCanonicalMethod,
    MethodOverride,
    ControlCharacter,
    DotSegments,
    PathEncoding,
    PathParameters,
    Upgrade,
    ContentLength,
    ConnectionHeader,
    /// Found unreadable while proxying (pingora refused the request's headers or body).
    Malformed,
}

impl BadRequest {
    pub const ALL: &'static [BadRequest] = &[
        BadRequest::NonCanonicalMethod,
        BadRequest::MethodOverride,
        BadRequest::ControlCharacter,
        BadRequest::DotSegments,
        BadRequest::PathEncoding,
        BadRequest::PathParameters,
        BadRequest::Upgrade,
        BadRequest::ContentLength,
        BadRequest::ConnectionHeader,
        BadRequest::Malformed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            BadRequest::NonCanonicalMethod => "non_canonical_method",
            BadRequest::MethodOverride => "method_override",
            BadRequest::ControlCharacter => "control_character",
            BadRequest::DotSegments => "dot_segments",
            BadRequest::PathEncoding => "invalid_path_encoding",
            BadRequest::PathParameters => "path_parameters",
            BadRequest::Upgrade => "upgrade_not_allowed",
            BadRequest::ContentLength => "invalid_content_length",
            BadRequest::ConnectionHeader => "invalid_connection_header",
            BadRequest::Malformed => "malformed_request",
        }
    }
}

/// The identity server could not be asked (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityDown {
    Timeout,
    Unreachable,
    ReadFailed,
    ServerError,
}

impl IdentityDown {
    pub const ALL: &'static [IdentityDown] =
        &[IdentityDown::Timeout, IdentityDown::Unreachable, IdentityDown::ReadFailed, IdentityDown::ServerError];

    pub const fn as_str(self) -> &'static str {
        match self {
            IdentityDown::Timeout => "introspection_timeout",
            IdentityDown::Unreachable => "introspection_unreachable",
            IdentityDown::ReadFailed => "introspection_read_failed",
            IdentityDown::ServerError => "introspection_5xx",
        }
    }
}

/// The identity server answered something the gateway cannot use (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityAnswer {
    ClientAuth,
    UnexpectedStatus,
    NotJson,
    NotAJwt,
    BadHeader,
    WrongTyp,
    NoJwks,
    NoClaims,
    BadAlg,
    NoKid,
    UnknownKey,
    BadSignature,
    BadIssuer,
    BadAudience,
    MissingClaim,
    BadJwt,
    BadExp,
    BadNbf,
    BadAud,
    NoTokenIssuer,
}

impl IdentityAnswer {
    pub const ALL: &'static [IdentityAnswer] = &[
        IdentityAnswer::ClientAuth,
        IdentityAnswer::UnexpectedStatus,
        IdentityAnswer::NotJson,
        IdentityAnswer::NotAJwt,
        IdentityAnswer::BadHeader,
        IdentityAnswer::WrongTyp,
        IdentityAnswer::NoJwks,
        IdentityAnswer::NoClaims,
        IdentityAnswer::BadAlg,
        IdentityAnswer::NoKid,
        IdentityAnswer::UnknownKey,
        IdentityAnswer::BadSignature,
        IdentityAnswer::BadIssuer,
        IdentityAnswer::BadAudience,
        IdentityAnswer::MissingClaim,
        IdentityAnswer::BadJwt,
        IdentityAnswer::BadExp,
        IdentityAnswer::BadNbf,
        IdentityAnswer::BadAud,
        IdentityAnswer::NoTokenIssuer,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            IdentityAnswer::ClientAuth => "introspection_client_auth",
            IdentityAnswer::UnexpectedStatus => "introspection_unexpected_status",
            IdentityAnswer::NotJson => "introspection_not_json",
            IdentityAnswer::NotAJwt => "introspection_not_a_jwt",
            IdentityAnswer::BadHeader => "introspection_bad_header",
            IdentityAnswer::WrongTyp => "introspection_wrong_typ",
            IdentityAnswer::NoJwks => "introspection_no_jwks",
            IdentityAnswer::NoClaims => "introspection_no_claims",
            IdentityAnswer::BadAlg => "introspection_bad_alg",
            IdentityAnswer::NoKid => "introspection_no_kid",
            IdentityAnswer::UnknownKey => "introspection_unknown_key",
            IdentityAnswer::BadSignature => "introspection_bad_signature",
            IdentityAnswer::BadIssuer => "introspection_bad_issuer",
            IdentityAnswer::BadAudience => "introspection_bad_audience",
            IdentityAnswer::MissingClaim => "introspection_missing_claim",
            IdentityAnswer::BadJwt => "introspection_bad_jwt",
            IdentityAnswer::BadExp => "introspection_bad_exp",
            IdentityAnswer::BadNbf => "introspection_bad_nbf",
            IdentityAnswer::BadAud => "introspection_bad_aud",
            IdentityAnswer::NoTokenIssuer => "no_token_issuer",
        }
    }
}

/// A limit whose excess is answered 429: the refusal reason and the `limit` label of
/// `gateway_rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    PartnerRequests,
    IntrospectionMisses,
    Route,
}

impl Limit {
    pub const ALL: &'static [Limit] = &[Limit::PartnerRequests, Limit::IntrospectionMisses, Limit::Route];

    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::PartnerRequests => "partner_requests",
            Limit::IntrospectionMisses => "introspection_misses",
            Limit::Route => "route",
        }
    }
}

/// A check the shared-state server answers; when it cannot and the check's policy is `closed`,
/// the request is refused `cluster_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SharedCheck {
    RateLimit,
    IntrospectionMisses,
    DpopReplay,
}

/// Who refused a request: the access line's `refused_by=`, the `filter` label of
/// `gateway_refusals_total`, the span's `mtls_gateway.refused_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusedBy {
    /// The connection's certificate was revoked since the handshake.
    Connection,
    Normalize,
    Router,
    Cors,
    Limits,
    /// The client sent something unforwardable or went away.
    Client,
    /// The API failed.
    Upstream,
    /// A route filter, by the name its configuration gives it.
    Filter(&'static str),
}

impl RefusedBy {
    /// Every refuser but the filters, which their configuration names.
    pub const STAGES: &'static [RefusedBy] = &[
        RefusedBy::Connection,
        RefusedBy::Normalize,
        RefusedBy::Router,
        RefusedBy::Cors,
        RefusedBy::Limits,
        RefusedBy::Client,
        RefusedBy::Upstream,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RefusedBy::Connection => "connection",
            RefusedBy::Normalize => "normalize",
            RefusedBy::Router => "router",
            RefusedBy::Cors => "cors",
            RefusedBy::Limits => "limits",
            RefusedBy::Client => "client",
            RefusedBy::Upstream => "upstream",
            RefusedBy::Filter(name) => name,
        }
    }
}

/// Who ended an exchange, for the access log's `ended_by=`: the client (it sent something
/// unreadable, or went away), the gateway (a refusal, or its own failure), or the upstream (its
/// answer or its failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    Client,
    Gateway,
    Upstream,
}

impl Party {
    pub const ALL: &'static [Party] = &[Party::Client, Party::Gateway, Party::Upstream];

    pub const fn as_str(self) -> &'static str {
        match self {
            Party::Client => "client",
            Party::Gateway => "gateway",
            Party::Upstream => "upstream",
        }
    }
}

/// Why the gateway ended or refused a connection to protect shared capacity: the `reason` label of
/// `gateway_connection_cuts_total` and the cut log's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cut {
    MaxConnections,
    AnonymousConnections,
    ConnectionDisplaced,
    PassthroughCapacity,
    TunnelDisplaced,
    SourceTunnels,
    SourceConnections,
    SourceHandshakes,
    Idle,
    TooSlow,
    MaxLifetime,
    HeaderTimeout,
    H2PrefaceTimeout,
    HeaderTooLarge,
    BodyTimeout,
    BodyMinRate,
    MaxConnectionAge,
    MaxConnectionAgeHard,
    AdminConnectionLifetime,
    AdminHandshakeTimeout,
    NoWorkerLoop,
    /// A connection to the trusted hop's listener from an address not in `trusted_hop.sources`.
    HopUntrustedSource,
    /// The hop's certificate is not one of `trusted_hop.hop_subjects`.
    HopCertificate,
}

impl Cut {
    pub const ALL: &'static [Cut] = &[
        Cut::MaxConnections,
        Cut::AnonymousConnections,
        Cut::ConnectionDisplaced,
        Cut::PassthroughCapacity,
        Cut::TunnelDisplaced,
        Cut::SourceTunnels,
        Cut::SourceConnections,
        Cut::SourceHandshakes,
        Cut::Idle,
        Cut::TooSlow,
        Cut::MaxLifetime,
        Cut::HeaderTimeout,
        Cut::H2PrefaceTimeout,
        Cut::HeaderTooLarge,
        Cut::BodyTimeout,
        Cut::BodyMinRate,
        Cut::MaxConnectionAge,
        Cut::MaxConnectionAgeHard,
        Cut::AdminConnectionLifetime,
        Cut::AdminHandshakeTimeout,
        Cut::NoWorkerLoop,
        Cut::HopUntrustedSource,
        Cut::HopCertificate,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Cut::MaxConnections => "max_connections",
            Cut::AnonymousConnections => "anonymous_connections",
            Cut::ConnectionDisplaced => "connection_displaced",
            Cut::PassthroughCapacity => "passthrough_capacity",
            Cut::TunnelDisplaced => "tunnel_displaced",
            Cut::SourceTunnels => "source_tunnels",
            Cut::SourceConnections => "source_connections",
            Cut::SourceHandshakes => "source_handshakes",
            // A tunnel's end and the cut it counts as are one word.
            Cut::Idle => TunnelEnd::Idle.as_str(),
            Cut::TooSlow => TunnelEnd::TooSlow.as_str(),
            Cut::MaxLifetime => TunnelEnd::MaxLifetime.as_str(),
            Cut::HeaderTimeout => "header_timeout",
            Cut::H2PrefaceTimeout => "h2_preface_timeout",
            // The cut of a header still arriving, and the 431 of one that arrived whole.
            Cut::HeaderTooLarge => Reason::HeaderTooLarge.as_str(),
            Cut::BodyTimeout => "body_timeout",
            Cut::BodyMinRate => "body_min_rate",
            Cut::MaxConnectionAge => "max_connection_age",
            Cut::MaxConnectionAgeHard => "max_connection_age_hard",
            Cut::AdminConnectionLifetime => "admin_connection_lifetime",
            Cut::AdminHandshakeTimeout => "admin_handshake_timeout",
            Cut::NoWorkerLoop => "no_worker_loop",
            Cut::HopUntrustedSource => "hop_untrusted_source",
            Cut::HopCertificate => "hop_certificate",
        }
    }
}

/// Why a client certificate that passed the handshake was refused by its revocation status
/// (`crate::revocation`): OCSP (RFC 6960) or a CRL fetched from a distribution point or a
/// configured URL. Revoked and unknown are answers (401); unavailable means no usable answer could
/// be had under `revocation.policy: hard` (503: retry later). The `reason` of the refusal, the
/// word of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertStatus {
    OcspRevoked,
    /// The responder does not know the certificate.
    OcspUnknown,
    /// No verified, current OCSP answer within the timeout (hard policy).
    OcspUnavailable,
    CrlRevoked,
    /// No CRL of the issuer could be fetched (hard policy).
    CrlUnavailable,
    /// The issuer's fetched CRL is past its `nextUpdate` (`tls.crl_expired: refuse`).
    CrlExpired,
}

impl CertStatus {
    pub const ALL: &'static [CertStatus] = &[
        CertStatus::OcspRevoked,
        CertStatus::OcspUnknown,
        CertStatus::OcspUnavailable,
        CertStatus::CrlRevoked,
        CertStatus::CrlUnavailable,
        CertStatus::CrlExpired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CertStatus::OcspRevoked => "ocsp_revoked",
            CertStatus::OcspUnknown => "ocsp_unknown",
            CertStatus::OcspUnavailable => "ocsp_unavailable",
            CertStatus::CrlRevoked => "crl_revoked",
            CertStatus::CrlUnavailable => "crl_unavailable",
            CertStatus::CrlExpired => "fetched_crl_expired",
        }
    }

    /// 401 for an answer about the certificate; 503 when no answer could be had.
    pub const fn status(self) -> u16 {
        match self {
            CertStatus::OcspUnavailable | CertStatus::CrlUnavailable | CertStatus::CrlExpired => 503,
            CertStatus::OcspRevoked | CertStatus::OcspUnknown | CertStatus::CrlRevoked => 401,
        }
    }

    /// An answer about the certificate itself (revoked, unknown): it ends live connections too.
    /// The others say that no answer could be had.
    pub const fn is_answer(self) -> bool {
        self.status() == 401
    }
}

/// Why a client certificate was refused in the handshake: the `reason` label of
/// `gateway_handshake_refusals_total` and the word of its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeRefusal {
    Expired,
    NotYetValid,
    Revoked,
    UnknownCa,
    CrlExpired,
    CrlMissing,
    CrlNotYetValid,
    ChainTooLong,
    InvalidCertificate,
}

impl HandshakeRefusal {
    pub const ALL: &'static [HandshakeRefusal] = &[
        HandshakeRefusal::Expired,
        HandshakeRefusal::NotYetValid,
        HandshakeRefusal::Revoked,
        HandshakeRefusal::UnknownCa,
        HandshakeRefusal::CrlExpired,
        HandshakeRefusal::CrlMissing,
        HandshakeRefusal::CrlNotYetValid,
        HandshakeRefusal::ChainTooLong,
        HandshakeRefusal::InvalidCertificate,
    ];

    /// The log word of a certificate accepted although its issuer's CRL expired
    /// (`tls.crl_expired: keep`): not a refusal, so not a label.
    pub const CRL_EXPIRED_KEPT: &'static str = "crl_expired_kept";

    pub const fn as_str(self) -> &'static str {
        match self {
            HandshakeRefusal::Expired => "expired",
            HandshakeRefusal::NotYetValid => "not_yet_valid",
            HandshakeRefusal::Revoked => "revoked",
            HandshakeRefusal::UnknownCa => "unknown_ca",
            HandshakeRefusal::CrlExpired => "crl_expired",
            HandshakeRefusal::CrlMissing => "crl_missing",
            HandshakeRefusal::CrlNotYetValid => "crl_not_yet_valid",
            HandshakeRefusal::ChainTooLong => "chain_too_long",
            HandshakeRefusal::InvalidCertificate => "invalid_certificate",
        }
    }
}

/// What the trusted hop's certificate header of one request held: the `result` label of
/// `gateway_forwarded_certificates_total`. A refused certificate is labelled with its handshake
/// refusal's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardedResult {
    /// No header: a client without a certificate behind the hop.
    Absent,
    Accepted,
    /// A header that holds no readable certificate, or two of them.
    Malformed,
    Refused(HandshakeRefusal),
}

impl ForwardedResult {
    pub fn all() -> impl Iterator<Item = ForwardedResult> {
        [ForwardedResult::Absent, ForwardedResult::Accepted, ForwardedResult::Malformed]
            .into_iter()
            .chain(HandshakeRefusal::ALL.iter().map(|r| ForwardedResult::Refused(*r)))
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ForwardedResult::Absent => "absent",
            ForwardedResult::Accepted => "accepted",
            ForwardedResult::Malformed => "malformed",
            ForwardedResult::Refused(r) => r.as_str(),
        }
    }
}

/// How a passthrough tunnel ended: the log's `end=` and the `end` label of
/// `gateway_passthrough_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelEnd {
    Closed,
    ClientError,
    UpstreamError,
    Idle,
    TooSlow,
    MaxLifetime,
    /// Ended by the gateway: the drain period ended, or another source displaced it.
    Ended,
    ConnectFailed,
    ConnectTimeout,
    ProxyProtocolFailed,
    /// Refused before it began: every tunnel slot is taken.
    OverCapacity,
}

impl TunnelEnd {
    pub const ALL: &'static [TunnelEnd] = &[
        TunnelEnd::Closed,
        TunnelEnd::ClientError,
        TunnelEnd::UpstreamError,
        TunnelEnd::Idle,
        TunnelEnd::TooSlow,
        TunnelEnd::MaxLifetime,
        TunnelEnd::Ended,
        TunnelEnd::ConnectFailed,
        TunnelEnd::ConnectTimeout,
        TunnelEnd::ProxyProtocolFailed,
        TunnelEnd::OverCapacity,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            TunnelEnd::Closed => "closed",
            TunnelEnd::ClientError => "client_error",
            TunnelEnd::UpstreamError => "upstream_error",
            TunnelEnd::Idle => "idle",
            TunnelEnd::TooSlow => "too_slow",
            TunnelEnd::MaxLifetime => "max_lifetime",
            TunnelEnd::Ended => "ended_by_gateway",
            TunnelEnd::ConnectFailed => "connect_failed",
            TunnelEnd::ConnectTimeout => "connect_timeout",
            TunnelEnd::ProxyProtocolFailed => "proxy_protocol_failed",
            TunnelEnd::OverCapacity => "over_capacity",
        }
    }

    /// The cut this end counts as, for the ends the gateway chose.
    pub const fn cut(self) -> Option<Cut> {
        match self {
            TunnelEnd::Idle => Some(Cut::Idle),
            TunnelEnd::TooSlow => Some(Cut::TooSlow),
            TunnelEnd::MaxLifetime => Some(Cut::MaxLifetime),
            _ => None,
        }
    }
}

/// Why a request's attempt on a backend failed, for passive health, retries and the metrics: the
/// `reason` label of `gateway_upstream_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Refused, reset or timed out before anything was sent, or the TLS handshake failed.
    Connect,
    /// The backend did not answer in time, or the connection broke after the request was sent.
    AfterSend,
}

impl Failure {
    pub const ALL: &'static [Failure] = &[Failure::Connect, Failure::AfterSend];

    pub const fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect_failed",
            Failure::AfterSend => "after_send",
        }
    }
}

/// How an attempt on a backend ended: the `result` label of `gateway_upstream_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attempt {
    /// An answer came.
    Ok,
    Failed(Failure),
}

impl Attempt {
    pub const ALL: &'static [Attempt] =
        &[Attempt::Ok, Attempt::Failed(Failure::Connect), Attempt::Failed(Failure::AfterSend)];

    pub const fn as_str(self) -> &'static str {
        match self {
            Attempt::Ok => OK,
            Attempt::Failed(f) => f.as_str(),
        }
    }
}

/// The label of a check or call that went well, in every family that has one.
const OK: &str = "ok";

/// How a DPoP proof check ended: the `result` label of `gateway_dpop_proofs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProofResult {
    Ok,
    Refused(Proof),
    /// A valid proof made with another key than the token's.
    KeyMismatch,
    /// The shared replay store could not be asked and its policy is `closed`.
    ReplayStoreUnavailable,
}

impl ProofResult {
    pub fn all() -> impl Iterator<Item = ProofResult> {
        let refused = Proof::ALL.iter().map(|p| ProofResult::Refused(*p));
        std::iter::once(ProofResult::Ok)
            .chain(refused)
            .chain([ProofResult::KeyMismatch, ProofResult::ReplayStoreUnavailable])
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ProofResult::Ok => OK,
            ProofResult::Refused(p) => p.as_str(),
            ProofResult::KeyMismatch => Token::DpopKeyMismatch.as_str(),
            ProofResult::ReplayStoreUnavailable => "replay_store_unavailable",
        }
    }
}

/// How an introspection call ended: the `result` label of `gateway_introspection_requests_total`
/// and the span's `mtls_gateway.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Introspection {
    Active,
    Inactive,
    /// Active at the identity server, but refused by one of the gateway's checks.
    Refused(Token),
    Down(IdentityDown),
    BadAnswer(IdentityAnswer),
}

impl Introspection {
    pub fn all() -> impl Iterator<Item = Introspection> {
        [Introspection::Active, Introspection::Inactive]
            .into_iter()
            .chain(Token::ALL.iter().map(|t| Introspection::Refused(*t)))
            .chain(IdentityDown::ALL.iter().map(|d| Introspection::Down(*d)))
            .chain(IdentityAnswer::ALL.iter().map(|a| Introspection::BadAnswer(*a)))
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Introspection::Active => "active",
            Introspection::Inactive => "inactive",
            Introspection::Refused(r) => r.as_str(),
            Introspection::Down(r) => r.as_str(),
            Introspection::BadAnswer(r) => r.as_str(),
        }
    }
}

/// How a token cache lookup was answered: the access log's `cache=` and the `result` label of
/// `gateway_token_cache_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cache {
    Hit,
    Miss,
    /// Another request's introspection call answered this one.
    Coalesced,
}

impl Cache {
    pub const ALL: &'static [Cache] = &[Cache::Hit, Cache::Miss, Cache::Coalesced];

    pub const fn as_str(self) -> &'static str {
        match self {
            Cache::Hit => "hit",
            Cache::Miss => "miss",
            Cache::Coalesced => "coalesced",
        }
    }
}

/// A call to the shared-state server: the `op` label of `gateway_cluster_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterOp {
    /// The readiness probe's `PING`.
    Ping,
    Gcra,
    Replay,
    Publish,
}

impl ClusterOp {
    pub const ALL: &'static [ClusterOp] = &[ClusterOp::Ping, ClusterOp::Gcra, ClusterOp::Replay, ClusterOp::Publish];

    pub const fn as_str(self) -> &'static str {
        match self {
            ClusterOp::Ping => "ping",
            ClusterOp::Gcra => "gcra",
            ClusterOp::Replay => "replay",
            ClusterOp::Publish => "publish",
        }
    }
}

/// How a call to the shared-state server ended: the `result` label of `gateway_cluster_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterResult {
    Ok,
    /// Not connected, or an error answer.
    Error,
    /// Slower than `cluster.timeout`.
    Timeout,
}

impl ClusterResult {
    pub const ALL: &'static [ClusterResult] = &[ClusterResult::Ok, ClusterResult::Error, ClusterResult::Timeout];

    pub const fn as_str(self) -> &'static str {
        match self {
            ClusterResult::Ok => OK,
            ClusterResult::Error => "error",
            ClusterResult::Timeout => "timeout",
        }
    }
}

/// A response status's class: the `class` label of `gateway_partner_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    Success,
    Redirection,
    ClientError,
    ServerError,
    /// No response was written (the client went away).
    None,
}

impl StatusClass {
    pub const ALL: &'static [StatusClass] = &[
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::None,
    ];

    pub const fn of(status: u16) -> StatusClass {
        match status {
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::None => "none",
        }
    }
}

// The access log's JSON form writes each word as its `as_str`, as the text form does.

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Serialize for RefusedBy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Serialize for Party {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Serialize for Cache {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn distinct<'a>(words: impl Iterator<Item = &'a str>) -> Result<usize, &'a str> {
        let mut seen = HashSet::new();
        for word in words {
            if !seen.insert(word) {
                return Err(word);
            }
        }
        Ok(seen.len())
    }

    #[test]
    fn no_family_spells_two_reasons_the_same() {
        assert_eq!(distinct(Reason::all().map(Reason::as_str)), Ok(Reason::all().count()));
        assert_eq!(distinct(Cut::ALL.iter().map(|c| c.as_str())), Ok(Cut::ALL.len()));
        assert_eq!(distinct(HandshakeRefusal::ALL.iter().map(|c| c.as_str())), Ok(HandshakeRefusal::ALL.len()));
        assert_eq!(distinct(TunnelEnd::ALL.iter().map(|c| c.as_str())), Ok(TunnelEnd::ALL.len()));
        assert_eq!(distinct(ProofResult::all().map(ProofResult::as_str)), Ok(ProofResult::all().count()));
        assert_eq!(distinct(Introspection::all().map(Introspection::as_str)), Ok(Introspection::all().count()));
    }

    #[test]
    fn words_are_labels_and_statuses_are_errors() {
        for reason in Reason::all() {
            assert!((400..600).contains(&reason.status()), "{reason:?}");
            let word = reason.as_str();
            let sentence = matches!(reason, Reason::Request(_));
            assert!(
                sentence || word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{word}"
            );
        }
        assert_eq!(Cut::Idle.as_str(), "idle");
        assert_eq!(Cut::HeaderTooLarge.as_str(), "header_too_large");
        assert_eq!(ProofResult::KeyMismatch.as_str(), "dpop_key_mismatch");
        assert_eq!(Attempt::Ok.as_str(), "ok");
    }
}
