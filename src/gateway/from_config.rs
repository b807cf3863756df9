//! A [`GatewayBuilder`] from the [configuration file](crate::config).

use http::HeaderName;

use super::{Backend, Gateway, GatewayBuilder, UserField, UserHeaders};
use crate::ConfigError;
use crate::config::{Config, Environment, HeaderChoice, ServiceConfig};

fn header(name: &str, what: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::InvalidServer(format!("{what}: `{name}` is not a header name")))
}

impl Config {
    /// The gateway this file describes: its authorization server (store connected), third-party
    /// services, backends with their policies, user headers, ingress header and origins.
    /// Secrets come from `env`. Every service needs a `url`.
    pub async fn gateway_builder(
        &self,
        env: Environment<'_>,
    ) -> Result<GatewayBuilder, ConfigError> {
        let mut gateway = Gateway::builder(self.auth_server_builder(env).await?);
        for service in &self.services {
            gateway = gateway.backend(backend(service, env)?);
        }
        gateway = gateway.address_policy(self.outbound.address_policy()?);
        for third_party in self.third_party_services(env)? {
            gateway = gateway.third_party(third_party);
        }
        if let Some(keys) = self.vault_keys(env)? {
            gateway = gateway.vault_keys(keys);
        }
        if let Some(key) = self.derived_key(env, "session ids")? {
            gateway = gateway.session_key(key);
        }
        let settings = &self.gateway;
        let mut headers = UserHeaders::default();
        for (key, choice) in &settings.user_headers {
            let field = UserField::from_key(key).ok_or_else(|| {
                ConfigError::InvalidServer(format!("gateway.user_headers: unknown field `{key}`"))
            })?;
            headers = match choice {
                HeaderChoice::Name(name) => {
                    headers.rename(field, header(name, "gateway.user_headers")?)
                }
                HeaderChoice::Enabled(false) => headers.omit(field),
                HeaderChoice::Enabled(true) => headers,
            };
        }
        gateway = gateway.user_headers(headers);
        if let Some(name) = &settings.ingress_header {
            gateway = gateway.ingress_header(header(name, "gateway.ingress_header")?);
        }
        for origin in &settings.allowed_origins {
            gateway = gateway.allow_origin(origin);
        }
        if settings.allow_loopback_origins {
            gateway = gateway.allow_loopback_origins();
        }
        Ok(gateway)
    }
}

fn backend(service: &ServiceConfig, env: Environment<'_>) -> Result<Backend, ConfigError> {
    let url = service.url.as_deref().ok_or_else(|| {
        ConfigError::InvalidServer(format!(
            "service `{}` needs a url behind the gateway",
            service.name
        ))
    })?;
    let mut backend = Backend::new(&service.name, url)
        .policy(service.policy()?)
        .require_scopes(&service.require_scopes);
    if let Some(scopes) = &service.challenge_scopes {
        backend = backend.challenge_scopes(scopes);
    }
    if let Some(text) = &service.description {
        backend = backend.description(text);
    }
    if let Some(name) = &service.service_token_header {
        backend = backend.service_token_header(header(name, "service_token_header")?);
    }
    if let Some(timeout) = ServiceConfig::millis(service.connect_timeout_ms) {
        backend = backend.connect_timeout(timeout);
    }
    if let Some(timeout) = ServiceConfig::millis(service.response_timeout_ms) {
        backend = backend.response_timeout(timeout);
    }
    if let Some(limit) = service.max_in_flight {
        backend = backend.max_in_flight(limit);
    }
    if let Some(limit) = service.max_in_flight_per_user {
        backend = backend.max_in_flight_per_user(limit);
    }
    if let Some(limit) = service.max_response_bytes {
        backend = backend.max_response_bytes(limit);
    }
    if let Some(name) = &service.gateway_secret_env {
        let what = format!("service `{}`", service.name);
        backend = backend.gateway_secret(crate::config::secret(env, name, &what)?);
    }
    Ok(backend)
}
