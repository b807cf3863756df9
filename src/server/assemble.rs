//! [`AuthServerBuilder::build`]: the configuration checked once, and the server assembled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::auth_server::{AuthServer, Grants, Inner, Metadata, Registry, SignIn};
use super::clients::Client;
use super::config::AuthServerBuilder;
use super::login::DevUser;
use super::revocation_list::RevocationList;
use super::{PublicUrls, SigningKeys};
use crate::ConfigError;
use crate::resource::{check_scope_token, parse_http_url};
use crate::store::{MemoryStore, Store};

impl AuthServerBuilder {
    /// Validates the configuration and prepares the metadata document.
    pub fn build(mut self) -> Result<AuthServer, ConfigError> {
        let urls = PublicUrls::new(&self.base)?;
        let server_name = self.server_name.take().unwrap_or_else(|| {
            url::Url::parse(urls.issuer())
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| urls.issuer().to_owned())
        });
        if self.resources.is_empty() {
            return Err(ConfigError::InvalidServer(
                "an authorization server needs a resource".into(),
            ));
        }
        let mut resources = Vec::new();
        for r in &self.resources {
            let url = parse_http_url("resource", r, false)?;
            resources.push(crate::resource::canonical_uri(&url));
        }
        for s in &self.scopes_supported {
            check_scope_token(s)?;
        }
        // OpenID Discovery is published with the code flow, and it requires `openid`: users get
        // an id_token when their client asks for it.
        if (!self.users.is_empty() || !self.providers.is_empty())
            && !self.scopes_supported.iter().any(|s| s == "openid")
        {
            self.scopes_supported.push("openid".to_owned());
        }
        let mut clients = HashMap::new();
        for (id, secret, scopes) in self.clients {
            if secret.len() < 32 {
                return Err(ConfigError::InvalidKey(format!(
                    "the secret of client `{id}` is shorter than 32 characters"
                )));
            }
            for s in &scopes {
                check_scope_token(s)?;
            }
            let client = Client {
                client_id: id.clone(),
                secret_sha256: Some(Sha256::digest(secret.as_bytes()).into()),
                scope: scopes.join(" "),
                name: None,
                redirect_uris: Vec::new(),
                grant_types: vec!["client_credentials".into()],
                configured: true,
                auth_method: None,
                client_uri: None,
                logo_uri: None,
                assertion_keys: None,
            };
            clients.insert(id, client);
        }
        for (id, redirect_uris, scopes) in self.public_clients {
            for uri in &redirect_uris {
                super::redirect::check_redirect_uri(uri).map_err(|e| ConfigError::InvalidUrl {
                    what: "redirect URI",
                    url: uri.clone(),
                    reason: e.into(),
                })?;
            }
            let client = Client {
                client_id: id.clone(),
                secret_sha256: None,
                scope: scopes.join(" "),
                name: None,
                redirect_uris,
                grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                configured: true,
                auth_method: None,
                client_uri: None,
                logo_uri: None,
                assertion_keys: None,
            };
            clients.insert(id, client);
        }
        for machine in &self.machine_clients {
            for s in &machine.scopes {
                check_scope_token(s)?;
            }
            let client = Client {
                client_id: machine.id.clone(),
                secret_sha256: None,
                scope: machine.scopes.join(" "),
                name: None,
                redirect_uris: Vec::new(),
                grant_types: vec!["client_credentials".into()],
                configured: true,
                auth_method: Some("private_key_jwt".into()),
                client_uri: None,
                logo_uri: None,
                assertion_keys: Some(
                    machine.verifier(urls.issuer(), &urls.endpoint("/oauth/token"))?,
                ),
            };
            if clients.insert(machine.id.clone(), client).is_some() {
                return Err(ConfigError::InvalidServer(format!(
                    "two clients have the id `{}`",
                    machine.id
                )));
            }
        }
        let code_flow = !self.users.is_empty() || !self.providers.is_empty();
        for (name, _, _) in &self.users {
            // `|` separates provider and subject in upstream users' subjects.
            if name.is_empty() || name.contains('|') {
                return Err(ConfigError::InvalidServer(format!(
                    "dev user name `{name}` must be non-empty and free of `|`"
                )));
            }
            // Machine clients' tokens carry their client id as the subject (RFC 9068): a user
            // of that name would share its identity.
            if clients.contains_key(name) {
                return Err(ConfigError::InvalidServer(format!(
                    "dev user `{name}` has the name of a machine client"
                )));
            }
        }
        let mut provider_ids = std::collections::HashSet::new();
        for p in &self.providers {
            super::upstream::check_provider_id(p.id())?;
            if !provider_ids.insert(p.id().to_owned()) {
                return Err(ConfigError::InvalidProvider(format!(
                    "two identity providers have the id `{}`",
                    p.id()
                )));
            }
        }
        // Users are `{id}|{sub}` for upstream providers and enterprise IdPs alike: one id for
        // two of them would let one speak for the other's users.
        for idp in &self.enterprise {
            if !provider_ids.insert(idp.id().to_owned()) {
                return Err(ConfigError::InvalidProvider(format!(
                    "the enterprise IdP id `{}` is already used by another identity provider",
                    idp.id()
                )));
            }
        }
        let enterprise = self
            .enterprise
            .iter()
            .map(|idp| idp.compile(urls.issuer()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut metadata = json!({
            "issuer": urls.issuer(),
            "token_endpoint": urls.endpoint("/oauth/token"),
            "jwks_uri": urls.endpoint("/oauth/jwks"),
            "registration_endpoint": urls.endpoint("/oauth/register"),
            "revocation_endpoint": urls.endpoint("/oauth/revoke"),
            "introspection_endpoint": urls.endpoint("/oauth/introspect"),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": super::assertion::ASSERTION_ALGORITHMS,
            "dpop_signing_alg_values_supported": self.dpop.algorithm_names(),
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": self.scopes_supported,
        });
        if code_flow {
            // Advertised only when someone can log in to authorize.
            metadata["authorization_endpoint"] = json!(urls.endpoint("/oauth/authorize"));
            metadata["grant_types_supported"] =
                json!(["authorization_code", "refresh_token", "client_credentials"]);
            metadata["response_types_supported"] = json!(["code"]);
            metadata["response_modes_supported"] = json!(["query"]);
            metadata["authorization_response_iss_parameter_supported"] = json!(true);
            metadata["client_id_metadata_document_supported"] = json!(true);
            metadata["token_endpoint_auth_methods_supported"] = json!([
                "none",
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt"
            ]);
            // OpenID Connect: an `openid` scope adds an id_token to the code exchange.
            metadata["subject_types_supported"] = json!(["public"]);
            metadata["userinfo_endpoint"] = json!(urls.endpoint("/oauth/userinfo"));
            metadata["id_token_signing_alg_values_supported"] = json!(["ES256"]);
            metadata["claims_supported"] =
                json!(["iss", "sub", "aud", "exp", "iat", "nonce", "groups"]);
        }
        if let Some(grants) = metadata["grant_types_supported"].as_array_mut() {
            if !enterprise.is_empty() {
                grants.push(json!(super::enterprise::JWT_BEARER_GRANT));
            }
            if !self.id_jag_audiences.is_empty() {
                grants.push(json!(super::enterprise::TOKEN_EXCHANGE_GRANT));
            }
        }
        if !self.id_jag_audiences.is_empty() {
            metadata["identity_chaining_requested_token_types_supported"] =
                json!([super::enterprise::ID_JAG_TYPE]);
        }
        let users = self
            .users
            .iter()
            .map(|(name, password, groups)| DevUser {
                name: name.clone(),
                password_sha256: Sha256::digest(password.as_bytes()).into(),
                groups: groups.clone(),
            })
            .collect();
        // A prefilled form shows the password to every visitor: loopback issuers only.
        let loopback = url::Url::parse(urls.issuer())
            .ok()
            .is_some_and(|u| crate::resource::is_loopback(&u));
        let mut hosts = self.allowed_hosts;
        if let Some(host) = url::Url::parse(urls.issuer())
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        {
            hosts.push(host);
        }
        if loopback {
            hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
        }
        let prefill = (self.prefill && loopback)
            .then(|| {
                self.users
                    .first()
                    .map(|(name, password, _)| (name.clone(), password.clone()))
            })
            .flatten();
        // Browsers key cookies by host, not port: two servers on 127.0.0.1 must not share a
        // cookie name, so the name carries a digest of the issuer.
        let digest = Sha256::digest(urls.issuer().as_bytes());
        // On https, the `__Host-` prefix: the browser keeps only a cookie set by this very
        // host, Secure, for path `/`, so a sibling subdomain cannot plant one (cookie tossing,
        // login CSRF). Plain http (loopback development) cannot carry it.
        let prefix = if urls.issuer().starts_with("https://") {
            "__Host-"
        } else {
            ""
        };
        let cookie_name = format!(
            "{prefix}tma_session_{:02x}{:02x}{:02x}{:02x}",
            digest[0], digest[1], digest[2], digest[3]
        );
        let keys = match self.keys {
            Some(keys) => keys,
            None => SigningKeys::generate()?,
        };
        // A retired key must outlive every token it signed (plus validators' leeway).
        keys.ensure_retention(self.access_token_ttl + Duration::from_secs(300));
        let store: Arc<dyn Store> = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::default()));
        Ok(AuthServer(Arc::new(Inner {
            urls,
            keys,
            store,
            grants: Grants {
                resources,
                scopes_supported: self.scopes_supported,
                access_token_ttl: self.access_token_ttl,
                refresh_token_ttl: self.refresh_token_ttl,
                refresh_grace: self.refresh_grace,
                dpop: self.dpop,
                enterprise,
                id_jag_audiences: self.id_jag_audiences,
            },
            registry: Registry {
                clients,
                cimd_development: self.cimd_development,
                client_address: self.client_address,
                registration_limit: self.registration_limit,
                // Only a developer's machine exempts its own clients.
                exempt_local_registrations: loopback && !self.registration_limit_loopback,
                registration_policy: self.registration_policy,
            },
            sign_in: SignIn {
                users,
                providers: self.providers,
                groups: self.groups,
                user_scopes: self.user_scopes,
                prefill,
                cookie_name,
                scope_descriptions: {
                    let mut descriptions: HashMap<String, String> = [
                        ("openid", "Know who you are (your user id)"),
                        ("profile", "Read your basic profile"),
                        ("email", "Read your email address"),
                        ("offline_access", "Keep access while you are away"),
                    ]
                    .into_iter()
                    .map(|(scope, text)| (scope.to_owned(), text.to_owned()))
                    .collect();
                    descriptions.extend(self.scope_descriptions);
                    descriptions
                },
            },
            pages: super::pages::pages(server_name, &self.page_templates)?,
            metadata: Metadata(Bytes::from(metadata.to_string())),
            revocations: Arc::new(RevocationList::new(self.access_token_ttl)),
            hosts,
        })))
    }
}
