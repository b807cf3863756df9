//! `[[clients]]` and `[outbound]`: who may get tokens, and where the server's own fetches go.

use serde::Deserialize;

use super::{Config, Environment, file_error, secret};
use crate::ConfigError;
use crate::server::AuthServerBuilder;

impl Config {
    /// Who may get tokens: clients (secret, public, machine), enterprise IdPs whose grants are
    /// redeemed, audiences this server issues grants for, and DPoP nonces.
    pub(super) fn add_access(
        &self,
        mut builder: AuthServerBuilder,
        env: Environment<'_>,
        addresses: &crate::address::AddressPolicy,
    ) -> Result<AuthServerBuilder, ConfigError> {
        for idp in &self.enterprise_idps {
            builder = builder.trust_enterprise_idp(idp.enterprise_idp(addresses)?);
        }
        for audience in &self.id_jag_audiences {
            builder = builder.issue_id_jags_for(audience.id_jag_audience());
        }
        if self.dpop.require_nonces {
            let key = self.derived_key(env, "dpop nonces")?.ok_or_else(|| {
                file_error(
                    "dpop.require_nonces needs secret_key_env (the nonce key derives from it)",
                )
            })?;
            builder = builder.dpop(crate::dpop::Dpop::new().require_nonces(key));
        }
        for client in &self.clients {
            if let Some(machine) = client.machine_client(addresses)? {
                builder = builder.machine_client(machine);
                continue;
            }
            builder = match &client.secret_env {
                Some(name) => {
                    let secret = secret(env, name, &format!("client `{}`", client.id))?;
                    builder.client(&client.id, secret, &client.scopes)
                }
                None => builder.public_client(&client.id, &client.redirect_uris, &client.scopes),
            };
        }
        Ok(builder)
    }
}

/// `[outbound]`: which addresses outbound fetches may reach, beyond public ones.
///
/// ```toml
/// [outbound]
/// allow = ["loopback", "10.20.0.0/16"]   # also "private", "link-local", "any"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OutboundConfig {
    /// `loopback`, `private`, `link-local`, `any`, or an address or CIDR network.
    #[serde(default)]
    pub allow: Vec<String>,
}

impl OutboundConfig {
    /// The [`AddressPolicy`](crate::address::AddressPolicy) this describes.
    pub fn address_policy(&self) -> Result<crate::address::AddressPolicy, ConfigError> {
        let mut policy = crate::address::AddressPolicy::public_only();
        for entry in &self.allow {
            policy = match entry.as_str() {
                "loopback" => policy.allow_loopback(),
                "private" => policy.allow_private(),
                "link-local" => policy.allow_link_local(),
                "any" => crate::address::AddressPolicy::unrestricted(),
                network => policy.allow_network(network).map_err(|_| {
                    file_error(format!(
                        "outbound.allow: `{network}` is not loopback, private, link-local, any, or an address or network"
                    ))
                })?,
            };
        }
        Ok(policy)
    }
}

/// `[[clients]]`: an operator-registered client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The client id.
    pub id: String,
    /// Confidential: the environment variable holding its secret (32+ characters).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Public (PKCE): its redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The scopes it may obtain.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A machine client (`private_key_jwt`): the PEM file of its public key.
    #[serde(default)]
    pub public_key_file: Option<std::path::PathBuf>,
    /// With `public_key_file`: its algorithm (default `ES256`; `ES384`, `RS256`, `PS256`, `EdDSA`, …).
    #[serde(default)]
    pub algorithm: Option<String>,
    /// A machine client (`private_key_jwt`) whose keys are published at this JWKS URL (fetched
    /// under `[outbound]`).
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

impl ClientConfig {
    /// The machine client this entry describes, if it names a key or a JWKS URL.
    pub(super) fn machine_client(
        &self,
        addresses: &crate::address::AddressPolicy,
    ) -> Result<Option<crate::server::MachineClient>, ConfigError> {
        let what = format!("client `{}`", self.id);
        let client = crate::server::MachineClient::new(&self.id, &self.scopes);
        match (&self.public_key_file, &self.jwks_uri, &self.secret_env) {
            (None, None, _) => Ok(None),
            (Some(_), Some(_), _) | (_, _, Some(_)) => Err(file_error(format!(
                "{what}: give one of secret_env, public_key_file and jwks_uri"
            ))),
            (None, Some(url), None) => Ok(Some(client.jwks_uri(url, addresses.clone()))),
            (Some(path), None, None) => {
                let pem = std::fs::read(path)
                    .map_err(|e| file_error(format!("{what}: {}: {e}", path.display())))?;
                let name = self.algorithm.as_deref().unwrap_or("ES256");
                let algorithm: jsonwebtoken::Algorithm = name
                    .parse()
                    .map_err(|_| file_error(format!("{what}: unknown algorithm `{name}`")))?;
                use jsonwebtoken::AlgorithmFamily as Family;
                let key = match algorithm.family() {
                    Family::Ec => crate::validate::JwtKey::ec_pem(&pem, algorithm),
                    Family::Rsa => crate::validate::JwtKey::rsa_pem(&pem, algorithm),
                    Family::Ed => crate::validate::JwtKey::ed_pem(&pem),
                    _ => Err(ConfigError::InvalidKey(format!(
                        "{name} is not a public-key algorithm"
                    ))),
                }
                .map_err(|e| file_error(format!("{what}: {e}")))?;
                Ok(Some(client.key(key)))
            }
        }
    }
}

/// `[[enterprise_idps]]`: an enterprise identity provider whose ID-JAGs are redeemed.
///
/// ```toml
/// [[enterprise_idps]]
/// id = "acme"                                   # users become acme|{sub}
/// issuer = "https://login.acme.example"
/// jwks_uri = "https://login.acme.example/keys"
/// allowed_clients = ["acme-assistant"]          # confidential clients of [[clients]]
/// trust_groups = false                          # its `groups` feed [groups] only if true
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EnterpriseIdpConfig {
    /// The prefix of its users' subjects.
    pub id: String,
    /// Its issuer, exactly.
    pub issuer: String,
    /// Where its keys are published (fetched under `[outbound]`).
    pub jwks_uri: String,
    /// The clients that may redeem its grants.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Whether its `groups` claim feeds the group mapping.
    #[serde(default)]
    pub trust_groups: bool,
}

impl EnterpriseIdpConfig {
    pub(super) fn enterprise_idp(
        &self,
        addresses: &crate::address::AddressPolicy,
    ) -> Result<crate::server::EnterpriseIdp, ConfigError> {
        Ok(crate::server::EnterpriseIdp::new(&self.id, &self.issuer)
            .jwks_uri(&self.jwks_uri, addresses.clone())
            .allowed_clients(&self.allowed_clients)
            .trust_groups(self.trust_groups))
    }
}

/// `[[id_jag_audiences]]`: an authorization server this one issues ID-JAGs for.
///
/// ```toml
/// [[id_jag_audiences]]
/// issuer = "https://mcp.partner.example"
/// clients = { "our-app" = "their-client-id" }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IdJagAudienceConfig {
    /// Its issuer, exactly (the ID-JAG's `aud`).
    pub issuer: String,
    /// Our client id → its client id there.
    #[serde(default)]
    pub clients: std::collections::BTreeMap<String, String>,
}

impl IdJagAudienceConfig {
    pub(super) fn id_jag_audience(&self) -> crate::server::IdJagAudience {
        self.clients.iter().fold(
            crate::server::IdJagAudience::new(&self.issuer),
            |audience, (ours, theirs)| audience.client(ours, theirs),
        )
    }
}

/// `[dpop]`: DPoP settings (DPoP itself is always on for clients that send proofs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DpopConfig {
    /// Token requests need a server nonce (derived from `secret_key_env`, so every replica
    /// accepts it).
    #[serde(default)]
    pub require_nonces: bool,
}
