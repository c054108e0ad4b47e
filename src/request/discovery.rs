//! Authorization server metadata: the introspection endpoint, JWKS URI and issuer of an identity
//! server, found from its issuer URL at start. RFC 8414 first (`/.well-known/oauth-authorization-server`
//! inserted before the issuer's path), then OpenID Connect Discovery 1.0
//! (`{issuer}/.well-known/openid-configuration`). The document's `issuer` must be the URL it was
//! found from (RFC 8414 §3.3), or a server could hand out another server's endpoints.

use serde::Deserialize;

/// Why discovery found no usable metadata.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Every metadata URL failed; each with why.
    #[error("no metadata found ({})", attempts(.0))]
    NotFound(Vec<(url::Url, FetchError)>),
    #[error("{document} names the issuer {named:?}, not {issuer}")]
    OtherIssuer { document: String, named: String, issuer: String },
    #[error("{document}: {field} {text:?}: {error}")]
    BadUrl { document: String, field: &'static str, text: String, error: url::ParseError },
    #[error("{document}: {field} {text:?} is not https")]
    NotHttps { document: String, field: &'static str, text: String },
}

/// Why one metadata URL gave no document.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Send(reqwest::Error),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    #[error("not a metadata document: {0}")]
    NotDocument(reqwest::Error),
}

fn attempts(tried: &[(url::Url, FetchError)]) -> String {
    tried.iter().map(|(url, e)| format!("{url}: {e}")).collect::<Vec<_>>().join("; ")
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The document's URL.
    pub source: url::Url,
    pub issuer: String,
    pub introspection_endpoint: Option<url::Url>,
    pub jwks_uri: Option<url::Url>,
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    introspection_endpoint: Option<String>,
    jwks_uri: Option<String>,
}

/// The two metadata URLs of `issuer`, in the order they are tried.
pub fn metadata_urls(issuer: &url::Url) -> Vec<url::Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    vec![rfc8414, oidc]
}

/// Fetches the metadata of `issuer`; every failed attempt is part of the error.
pub async fn discover(client: &reqwest::Client, issuer: &url::Url) -> Result<Metadata, DiscoveryError> {
    let mut tried = Vec::new();
    for url in metadata_urls(issuer) {
        match fetch(client, &url).await {
            Ok(doc) => return metadata(issuer, url, doc),
            Err(e) => tried.push((url, e)),
        }
    }
    Err(DiscoveryError::NotFound(tried))
}

async fn fetch(client: &reqwest::Client, url: &url::Url) -> Result<Document, FetchError> {
    let response = client.get(url.clone()).send().await.map_err(FetchError::Send)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    response.json::<Document>().await.map_err(FetchError::NotDocument)
}

fn metadata(issuer: &url::Url, source: url::Url, doc: Document) -> Result<Metadata, DiscoveryError> {
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    if !same(&doc.issuer, issuer.as_str()) {
        let (document, issuer) = (source.to_string(), issuer.to_string());
        return Err(DiscoveryError::OtherIssuer { document, named: doc.issuer, issuer });
    }
    let https = |field: &'static str, v: Option<String>| -> Result<Option<url::Url>, DiscoveryError> {
        let Some(text) = v else { return Ok(None) };
        let document = source.to_string();
        let u = match url::Url::parse(&text) {
            Ok(u) => u,
            Err(error) => return Err(DiscoveryError::BadUrl { document, field, text, error }),
        };
        if u.scheme() != "https" {
            return Err(DiscoveryError::NotHttps { document, field, text });
        }
        Ok(Some(u))
    };
    Ok(Metadata {
        introspection_endpoint: https("introspection_endpoint", doc.introspection_endpoint)?,
        jwks_uri: https("jwks_uri", doc.jwks_uri)?,
        issuer: doc.issuer,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8414_inserts_the_well_known_part_before_the_path() {
        let u = url::Url::parse("https://login.example.com/oauth/v2/oauth-anonymous").unwrap();
        let urls: Vec<String> = metadata_urls(&u).iter().map(|u| u.to_string()).collect();
        assert_eq!(
            urls,
            [
                "https://login.example.com/.well-known/oauth-authorization-server/oauth/v2/oauth-anonymous",
                "https://login.example.com/oauth/v2/oauth-anonymous/.well-known/openid-configuration",
            ]
        );
        let root = url::Url::parse("https://idp.example.com").unwrap();
        let urls: Vec<String> = metadata_urls(&root).iter().map(|u| u.to_string()).collect();
        assert_eq!(
            urls,
            [
                "https://idp.example.com/.well-known/oauth-authorization-server",
                "https://idp.example.com/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn another_issuer_in_the_document_is_refused() {
        let issuer = url::Url::parse("https://idp.example.com").unwrap();
        let doc = |iss: &str, ep: &str| Document {
            issuer: iss.into(),
            introspection_endpoint: Some(ep.into()),
            jwks_uri: None,
        };
        let src = metadata_urls(&issuer)[0].clone();
        assert!(metadata(&issuer, src.clone(), doc("https://evil.example.com", "https://x/i")).is_err());
        assert!(metadata(&issuer, src.clone(), doc("https://idp.example.com", "http://x/i")).is_err());
        let m = metadata(&issuer, src, doc("https://idp.example.com", "https://x/i")).unwrap();
        assert_eq!(m.introspection_endpoint.unwrap().as_str(), "https://x/i");
    }
}
