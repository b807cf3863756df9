//! `[[clients]]` and `[outbound]`: who may get tokens, and where the server's own fetches go.

use serde::Deserialize;

use super::file_error;
use crate::ConfigError;

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
