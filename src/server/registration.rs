//! RFC 7591 dynamic client registration, with the per-address limit and the registration
//! policy.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::auth_server::AuthServer;
use super::clients::Client;
use super::error::{OAuthError, no_store};
use super::keyspace;
use super::primitives::{now, random_token};
use super::redirect::RedirectKind;
use super::source::ClientRegistration;
use crate::Scopes;
use crate::audit;
use crate::store::Store;

#[derive(Deserialize)]
struct RegistrationBody {
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    #[serde(default)]
    application_type: Option<String>,
}

/// How long a registered client that never obtained a grant is kept.
pub(super) const UNUSED_REGISTRATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// RFC 7591 dynamic registration of public or confidential `authorization_code` clients (machine
/// clients are configured, never self-registered). Redirect URIs must be https or loopback http,
/// without fragments; `application_type` `web` clients may not use loopback redirects. The
/// registration policy sees every valid request; each client address gets a limited number of
/// registrations per window. A registration never used expires after a day; one with a grant
/// lives as long as its refresh tokens.
pub(super) async fn register(
    State(server): State<AuthServer>,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let result = register_client(server, parts, body).await;
    let outcome = match &result {
        Ok(_) => "registered",
        Err(e) => e.status_and_code().1,
    };
    crate::metrics::labelled(crate::metrics::REGISTRATIONS, &[("outcome", outcome)]);
    result
}

async fn register_client(
    server: AuthServer,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let invalid = |msg: &str| OAuthError::InvalidClientMetadata(msg.to_owned().into());
    let bad_redirect = |msg: &str| OAuthError::InvalidRedirectUri(msg.to_owned().into());
    // RFC 7591: a JSON object (a derived struct would also read an array, field by field;
    // read directly, it refuses repeated fields).
    let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let Some(request) = is_object
        .then(|| serde_json::from_slice::<RegistrationBody>(&body).ok())
        .flatten()
    else {
        return Err(invalid(
            "the registration request is not a valid JSON document",
        ));
    };
    // RFC 7591 §2: grant_types defaults to authorization_code.
    let mut grant_types = request
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into()]);
    if grant_types.iter().any(|g| g == "client_credentials") {
        // Open registration of machine clients would hand anyone tokens with no user in the
        // loop: machine clients are configured (`AuthServerBuilder::client`) only.
        return Err(invalid(
            "client_credentials clients cannot register themselves here",
        ));
    }
    let interactive = grant_types
        .iter()
        .all(|g| g == "authorization_code" || g == "refresh_token")
        && grant_types.iter().any(|g| g == "authorization_code");
    if !(interactive && server.code_flow()) {
        return Err(invalid("unsupported grant_types for this server"));
    }
    if request
        .response_types
        .as_ref()
        .is_some_and(|r| r.iter().any(|t| t != "code"))
    {
        return Err(invalid("response_types may only be [\"code\"]"));
    }
    let redirect_uris = request.redirect_uris.unwrap_or_default();
    if redirect_uris.is_empty() || redirect_uris.len() > 10 {
        return Err(bad_redirect("between 1 and 10 redirect_uris are required"));
    }
    let mut native_only = false;
    for uri in &redirect_uris {
        match super::redirect::check_redirect_uri(uri) {
            Ok(kind) => native_only |= kind != RedirectKind::Web,
            Err(e) => return Err(bad_redirect(e)),
        }
    }
    let application_type = request.application_type.as_deref().unwrap_or("native");
    match application_type {
        "native" => {}
        "web" if native_only => {
            return Err(bad_redirect(
                "web applications may not use loopback or private-use scheme redirect URIs",
            ));
        }
        "web" => {}
        _ => return Err(invalid("application_type must be native or web")),
    }
    let method = request
        .token_endpoint_auth_method
        .as_deref()
        .unwrap_or("none");
    let confidential = match method {
        "client_secret_basic" | "client_secret_post" => true,
        "none" => false,
        _ => return Err(invalid("unsupported token_endpoint_auth_method")),
    };
    let Some(scope) =
        Scopes::new(&server.grants().scopes_supported).narrow(request.scope.as_deref())
    else {
        return Err(invalid("scope holds scopes this server does not support"));
    };
    if request.client_name.as_ref().is_some_and(|n| n.len() > 200) {
        return Err(invalid("client_name is too long"));
    }
    if !grant_types.iter().any(|g| g == "refresh_token") {
        grant_types.push("refresh_token".into());
    }
    let scope = scope.to_string();
    let source = server.registry().client_address.client_address(&parts);
    if let Some(policy) = &server.registry().registration_policy {
        let registration = ClientRegistration {
            client_name: request.client_name.as_deref(),
            redirect_uris: &redirect_uris,
            grant_types: &grant_types,
            scope: &scope,
            confidential,
            source,
            metadata_document: None,
        };
        if let Err(reason) = policy(&registration) {
            tracing::info!(target: audit::TARGET, ?source, reason = %crate::audit::Escaped(&reason), "registration refused by policy");
            return Err(invalid(&reason));
        }
    }
    // Counted only for requests that would register: invalid ones store nothing.
    if let Some((max, per)) = server.registry().registration_limit
        && !(server.registry().exempt_local_registrations && local_client(source, &parts.headers))
    {
        let (started, period) = (now(), per.as_secs().max(1));
        let window = started / period;
        // An IPv6 client holds a whole /64 (rotating within it is free): that is its bucket.
        let bucket = match source.map(|ip| ip.to_canonical()) {
            Some(std::net::IpAddr::V6(ip)) => {
                let [a, b, c, d, ..] = ip.segments();
                format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
            Some(ip) => ip.to_string(),
            None => "unknown".to_owned(),
        };
        let key = keyspace::registration_count(&bucket, window);
        if server.store().increment(&key, per).await? > max {
            tracing::warn!(target: audit::TARGET, source = %crate::audit::Escaped(&bucket), "registration limit reached");
            return Err(OAuthError::RateLimited {
                description: "too many registrations from this address; try again later".into(),
                retry_after: ((window + 1) * period).saturating_sub(started),
            });
        }
    }
    let (Some(id_part), Some(secret)) = (random_token(), random_token()) else {
        return Err(OAuthError::no_randomness());
    };
    let client_id = format!("app-{id_part}");
    let client = Client {
        client_id: client_id.clone(),
        secret_sha256: confidential.then(|| Sha256::digest(secret.as_bytes()).into()),
        scope: scope.clone(),
        name: request.client_name.clone(),
        redirect_uris: redirect_uris.clone(),
        grant_types: grant_types.clone(),
        configured: false,
        auth_method: confidential.then(|| method.to_owned()),
        // A self-registered client's links are its own claim: never shown.
        client_uri: None,
        logo_uri: None,
        assertion_keys: None,
    };
    let stored =
        serde_json::to_vec(&client).map_err(|e| OAuthError::ServerError(e.to_string().into()))?;
    let fresh = server
        .store()
        .put_if_absent(
            keyspace::client(&client_id).as_str(),
            Bytes::from(stored),
            UNUSED_REGISTRATION_TTL,
        )
        .await?;
    if !fresh {
        return Err(OAuthError::ServerError("client id collision".into()));
    }
    tracing::info!(target: audit::TARGET, client_id = %crate::audit::Escaped(&client_id), ?source, "client registered");
    let mut document = json!({
        "client_id": client_id, "client_id_issued_at": now(),
        "grant_types": grant_types, "token_endpoint_auth_method": method,
        "scope": scope, "client_name": request.client_name,
        "redirect_uris": redirect_uris, "response_types": ["code"],
        "application_type": application_type,
    });
    if confidential {
        // Returned once; only its hash is kept.
        document["client_secret"] = json!(secret);
        document["client_secret_expires_at"] = json!(0);
    }
    let mut response = (StatusCode::CREATED, axum::Json(document)).into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// A client on this machine: a loopback address, and no sign of a proxy relaying someone else.
fn local_client(source: Option<std::net::IpAddr>, headers: &HeaderMap) -> bool {
    source.is_some_and(|ip| ip.to_canonical().is_loopback())
        && !["forwarded", "x-forwarded-for", "x-real-ip"]
            .iter()
            .any(|name| headers.contains_key(*name))
}

impl AuthServer {
    /// Keeps a dynamically registered client as long as a grant of it may live.
    pub(super) async fn keep_client(&self, client: &Client) {
        if self.registry().clients.contains_key(&client.client_id) {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec(client) {
            let key = keyspace::client(&client.client_id);
            let _ = self
                .store()
                .put(
                    key.as_str(),
                    Bytes::from(bytes),
                    self.grants().refresh_token_ttl,
                )
                .await;
        }
    }
}
