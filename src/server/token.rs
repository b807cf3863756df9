//! `POST /oauth/token`: client authentication, the `client_credentials` grant, the dispatch to
//! the user grants, and the minting of access tokens and id_tokens.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};
use serde_json::json;

use super::auth_server::AuthServer;
use super::clients::Client;
use super::code_grant::exchange_code;
use super::error::{OAuthError, no_store};
use super::keyspace;
use super::login::Session;
use super::primitives::{Form, digest, now, random_token};
use super::refresh::{Refresh, refresh};
use super::storage::save;
use crate::Scopes;
use crate::audit;
use crate::resource::canonical_audience;

/// `POST /oauth/token`: the client first (authenticated by its secret, or a public client by
/// its id), then the grant type (`unsupported_grant_type` for one this server does not serve,
/// `unauthorized_client` for one this client may not use), then the grant itself: a client
/// that authenticated hears what is wrong with its grant, never `invalid_client`.
pub(super) async fn token(
    State(server): State<AuthServer>,
    headers: HeaderMap,
    Form(form): Form,
) -> Result<Response, OAuthError> {
    let grant = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => "authorization_code",
        Some("refresh_token") => "refresh_token",
        Some("client_credentials") => "client_credentials",
        _ => "other",
    };
    let result = issue(&server, &headers, &form).await;
    match &result {
        Ok(_) => crate::metrics::labelled(crate::metrics::TOKENS_ISSUED, &[("grant", grant)]),
        Err(e) => crate::metrics::labelled(
            crate::metrics::TOKEN_ERRORS,
            &[("grant", grant), ("error", e.status_and_code().1)],
        ),
    }
    result
}

/// The token endpoint's work: the client, the grant type, the grant.
async fn issue(
    server: &AuthServer,
    headers: &HeaderMap,
    form: &std::collections::HashMap<String, String>,
) -> Result<Response, OAuthError> {
    // A DPoP proof first (RFC 9449 §5): the tokens will be bound to its key.
    let jkt = dpop_proof(server, headers)?;
    let client = grant_client(server, headers, form).await?;
    let grant = form
        .get("grant_type")
        .ok_or(OAuthError::InvalidRequest("grant_type is required".into()))?;
    match grant.as_str() {
        "authorization_code" | "refresh_token" if !server.code_flow() => {
            return Err(OAuthError::UnsupportedGrantType(
                "this server issues client_credentials tokens only".into(),
            ));
        }
        "authorization_code" | "refresh_token" | "client_credentials" => {}
        // Who may redeem or ask for ID-JAGs is configured with the IdP or the audience.
        super::enterprise::JWT_BEARER_GRANT => {
            if client.secret_sha256.is_none() && client.assertion_keys.is_none() {
                return Err(OAuthError::UnauthorizedClient(
                    "an ID-JAG is redeemed by an authenticated client".into(),
                ));
            }
            return super::enterprise::redeem_id_jag(server, &client, form, jkt.as_deref()).await;
        }
        super::enterprise::TOKEN_EXCHANGE_GRANT => {
            return super::enterprise::issue_id_jag(server, &client, form).await;
        }
        _ => {
            return Err(OAuthError::UnsupportedGrantType(
                "unknown grant_type".into(),
            ));
        }
    }
    // A public client never gets client_credentials, whatever it registered.
    let confidential = client.secret_sha256.is_some() || client.assertion_keys.is_some();
    if !client.grant_types.iter().any(|g| g == grant)
        || (grant == "client_credentials" && !confidential)
    {
        return Err(OAuthError::UnauthorizedClient(
            format!("this client may not use {grant}").into(),
        ));
    }
    match grant.as_str() {
        "authorization_code" => exchange_code(server, &client, form, jkt.as_deref()).await,
        "refresh_token" => refresh(server, &client, form, jkt.as_deref()).await,
        _ => client_credentials(server, &client, form, jkt),
    }
}

/// The thumbprint of the `DPoP` proof's key, if the request carries one (checked for `POST`
/// to our token endpoint, without `ath`).
fn dpop_proof(server: &AuthServer, headers: &HeaderMap) -> Result<Option<String>, OAuthError> {
    let mut proofs = headers.get_all(crate::wire::DPOP).iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => return Ok(None),
        (Some(proof), None) => proof.to_str().map_err(|_| {
            OAuthError::InvalidDpopProof("the DPoP proof is not visible ASCII".into())
        })?,
        (Some(_), Some(_)) => {
            return Err(OAuthError::InvalidDpopProof(
                "more than one DPoP proof".into(),
            ));
        }
    };
    let token_endpoint = server.urls().endpoint("/oauth/token");
    match server.dpop().verify(proof, "POST", &token_endpoint, None) {
        Ok(proven) => Ok(Some(proven.jkt)),
        Err(crate::dpop::DpopError::UseNonce) => Err(OAuthError::UseDpopNonce {
            nonce: server.dpop().current_nonce().unwrap_or_default(),
        }),
        Err(e @ crate::dpop::DpopError::Busy) => {
            Err(OAuthError::TemporarilyUnavailable(e.to_string().into()))
        }
        Err(e) => Err(OAuthError::InvalidDpopProof(e.to_string().into())),
    }
}

/// `Bearer`, or `DPoP` for a token bound to a key.
pub(super) fn token_type(jkt: Option<&str>) -> &'static str {
    if jkt.is_some() { "DPoP" } else { "Bearer" }
}

/// `grant_type=client_credentials`: a token for the client itself.
fn client_credentials(
    server: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
    jkt: Option<String>,
) -> Result<Response, OAuthError> {
    // RFC 8707: the resource the token is for; with one resource, it may be left out.
    let resource = match form.get("resource") {
        Some(r) => canonical_audience(r).into_owned(),
        None if server.grants().resources.len() == 1 => server.grants().resources[0].clone(),
        None => {
            return Err(OAuthError::InvalidTarget("resource is required".into()));
        }
    };
    if !server.grants().resources.contains(&resource) {
        return Err(OAuthError::InvalidTarget(
            "this server issues no tokens for that resource".into(),
        ));
    }
    let Some(scope) = client.requested_scope(server, form.get("scope").map(String::as_str)) else {
        return Err(OAuthError::InvalidScope(
            "the client may not request these scopes".into(),
        ));
    };
    let ttl = server.grants().access_token_ttl.as_secs();
    let access_token = server.mint_access_token(
        &client.client_id,
        &client.client_id,
        &resource,
        &scope,
        None,
        jkt.as_deref(),
    )?;
    tracing::info!(target: audit::TARGET, client_id = %crate::audit::Escaped(&client.client_id), scope = %crate::audit::Escaped(&scope), resource = %crate::audit::Escaped(&resource), "access token issued (client_credentials)");
    Ok(json_no_store(json!({
        "access_token": access_token, "token_type": token_type(jkt.as_deref()), "expires_in": ttl, "scope": scope.to_string(),
    })))
}

impl AuthServer {
    /// Whether users can sign in (dev users or an identity provider): the authorization code
    /// flow is served.
    pub(super) fn code_flow(&self) -> bool {
        !self.sign_in().users.is_empty() || !self.sign_in().providers.is_empty()
    }

    /// `requested` narrowed to what this user may be granted (see
    /// [`AuthServerBuilder::groups`]). `openid` is an identity request, not a permission: it
    /// is never removed.
    pub(super) fn user_scope(&self, session: &Session, requested: &str) -> String {
        self.scope_for_groups(&session.groups, requested)
    }

    /// `requested` narrowed to what a user in `groups` may be granted.
    pub(super) fn scope_for_groups(&self, groups: &[String], requested: &str) -> String {
        let Some(mapping) = &self.sign_in().groups else {
            return requested.to_owned();
        };
        let granted_by_groups = groups
            .iter()
            .filter_map(|g| mapping.scopes.get(g))
            .flatten();
        let allowed: std::collections::HashSet<&str> = self
            .sign_in()
            .user_scopes
            .iter()
            .chain(granted_by_groups)
            .map(String::as_str)
            .chain(["openid"])
            .collect();
        Scopes::from_space_separated(requested)
            .iter()
            .filter(|s| allowed.contains(s))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Signs an OpenID Connect id_token for `client_id`.
    pub(super) fn mint_id_token(
        &self,
        subject: &str,
        client_id: &str,
        nonce: Option<&str>,
        groups: &[String],
        family: &str,
    ) -> Result<String, OAuthError> {
        let issued_at = now();
        // `fid`: the grant family, so an id_token traded for an ID-JAG (token exchange) stops
        // being accepted once the sign-in behind it is revoked.
        let mut claims = json!({
            "iss": self.issuer(), "sub": subject, "aud": client_id,
            "iat": issued_at, "exp": issued_at + self.grants().access_token_ttl.as_secs(),
            "fid": family,
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        if !groups.is_empty() {
            claims["groups"] = json!(groups);
        }
        self.signing_keys()
            .sign(&claims, "JWT")
            .map_err(|e| OAuthError::ServerError(e.to_string().into()))
    }

    /// Signs an access token (RFC 9068): `aud` is the resource, `fid` the grant family a
    /// replayed code or refresh token revokes.
    pub(super) fn mint_access_token(
        &self,
        subject: &str,
        client_id: &str,
        resource: &str,
        scope: &Scopes,
        family: Option<&str>,
        jkt: Option<&str>,
    ) -> Result<String, OAuthError> {
        let issued_at = now();
        let Some(jti) = random_token() else {
            return Err(OAuthError::no_randomness());
        };
        let mut claims = json!({
            "iss": self.issuer(), "sub": subject, "client_id": client_id,
            "aud": resource, "scope": scope.to_string(), "iat": issued_at,
            "exp": issued_at + self.grants().access_token_ttl.as_secs(), "jti": jti,
        });
        if let Some(family) = family {
            claims["fid"] = json!(family);
        }
        if let Some(jkt) = jkt {
            // RFC 9449 §6.1: the token is bound to the proof key.
            claims["cnf"] = json!({ "jkt": jkt });
        }
        self.signing_keys()
            .sign(&claims, "at+jwt")
            .map_err(|e| OAuthError::ServerError(e.to_string().into()))
    }
}

/// Authenticates the client of a user grant: confidential clients with their secret, public
/// clients by `client_id` alone (PKCE or the refresh token binds the rest).
pub(super) async fn grant_client(
    server: &AuthServer,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Client, OAuthError> {
    let has_credentials = headers.contains_key(header::AUTHORIZATION)
        || form.contains_key("client_secret")
        || form.contains_key("client_assertion")
        || form.contains_key("client_assertion_type");
    if has_credentials {
        return server
            .authenticate(headers, form)
            .await
            .map(|(client, _)| client);
    }
    let id = form
        .get("client_id")
        .ok_or(OAuthError::InvalidClient { basic: false })?;
    match server.lookup_client(id).await? {
        // A public client is one with no credentials to present: a client with a secret or
        // keys that sent none has not authenticated.
        Some(client) if client.secret_sha256.is_none() && client.assertion_keys.is_none() => {
            Ok(client)
        }
        _ => Err(OAuthError::InvalidClient { basic: false }),
    }
}

/// The token response body (an access token, and a refresh token for clients allowed to
/// refresh), and the store key of that refresh token.
#[allow(clippy::too_many_arguments)]
pub(super) async fn token_body(
    server: &AuthServer,
    client: &Client,
    subject: &str,
    resource: &str,
    scope: &Scopes,
    family: &str,
    parent: Option<&str>,
    jkt: Option<&str>,
) -> Result<(serde_json::Value, Option<String>), OAuthError> {
    let access_token = server.mint_access_token(
        subject,
        &client.client_id,
        resource,
        scope,
        Some(family),
        jkt,
    )?;
    let mut body = json!({
        "access_token": access_token, "token_type": token_type(jkt),
        "expires_in": server.grants().access_token_ttl.as_secs(), "scope": scope.to_string(),
    });
    if client.grant_types.iter().any(|g| g == "refresh_token") {
        let refresh_token = random_token().ok_or_else(OAuthError::no_randomness)?;
        let entry = Refresh {
            client_id: client.client_id.clone(),
            scope: scope.to_string(),
            resource: resource.to_owned(),
            subject: subject.to_owned(),
            family: family.to_owned(),
            rotated_at: None,
            successor_used: false,
            parent: parent.map(str::to_owned),
            child: None,
            successor_sealed: None,
            jkt: jkt.map(str::to_owned),
        };
        let key = keyspace::refresh_token(&digest(&refresh_token));
        save(server, &key, &entry, server.grants().refresh_token_ttl).await?;
        body["refresh_token"] = json!(refresh_token);
        return Ok((body, Some(key.into_string())));
    }
    Ok((body, None))
}

pub(super) fn json_no_store(body: serde_json::Value) -> Response {
    let mut response = axum::Json(body).into_response();
    no_store(response.headers_mut());
    response
}
