//! DPoP (RFC 9449): access tokens bound to a key the client holds, so a stolen token is useless
//! without that key.
//!
//! The client signs a short proof JWT for each request (`DPoP` header: `typ` `dpop+jwt`, its
//! public key in `jwk`, the method `htm`, the URL `htu`, a fresh `jti`, `iat`, and with a
//! token the hash `ath`). The authorization server binds the tokens it issues to the key's
//! RFC 7638 thumbprint (`cnf.jkt`, `token_type` `DPoP`); the bearer layer accepts such a token
//! only as `Authorization: DPoP <token>` with a valid proof by that key, and refuses it as a
//! plain bearer token.
//!
//! [`Dpop`] holds what both sides check with: the accepted algorithms, the `iat` window, a
//! replay cache of `jti`s, and optional server nonces (`DPoP-Nonce`), stateless: a nonce is an
//! HMAC of a five-minute time bucket, so any replica sharing the key accepts it, and clients
//! may reuse it (the TypeScript SDK does, across requests) until it ages out.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The proof algorithms accepted by default: asymmetric only (ES256 is what clients default to).
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// How far a proof's `iat` may be from now, either way.
pub const DEFAULT_PROOF_WINDOW: Duration = Duration::from_secs(300);

/// How long a server nonce is issued for (it is accepted for up to twice this).
const NONCE_PERIOD: u64 = 300;

/// Proofs remembered at once for replay detection; past it the oldest are forgotten (a proof
/// older than the window is refused by its `iat` anyway).
const REPLAY_CAPACITY: u64 = 200_000;

/// What DPoP proofs are checked with; cheap to clone (shared).
///
/// ```
/// use tower_mcp_auth::dpop::Dpop;
///
/// // Proofs must carry a server nonce; replicas sharing the key accept each other's nonces.
/// let dpop = Dpop::new().require_nonces(b"a deployment secret of 32 bytes!");
/// # let _ = dpop;
/// ```
#[derive(Clone)]
pub struct Dpop(Arc<Shared>);

struct Shared {
    algorithms: Vec<Algorithm>,
    window: Duration,
    replay: moka::sync::Cache<[u8; 32], ()>,
    nonce_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Dpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dpop")
            .field("algorithms", &self.0.algorithms)
            .field("window", &self.0.window)
            .field("nonces", &self.0.nonce_key.is_some())
            .finish()
    }
}

impl Default for Dpop {
    fn default() -> Self {
        Dpop::new()
    }
}

/// Why a proof was refused. The text is what the client reads in `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// The proof is missing, malformed, or fails a check (`invalid_dpop_proof`).
    #[error("{0}")]
    InvalidProof(&'static str),
    /// The proof lacks the current server nonce (`use_dpop_nonce`): retry with the
    /// `DPoP-Nonce` the answer carries.
    #[error("a DPoP nonce is required; retry with the DPoP-Nonce given")]
    UseNonce,
    /// The replay cache is full of unexpired proofs (a flood): no proof can be told fresh, so
    /// none is accepted until some age out (`503`).
    #[error("too many DPoP proofs to check for replay; retry shortly")]
    Busy,
}

/// A proof that passed: the thumbprint of the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key, base64url (what `cnf.jkt` holds).
    pub jkt: String,
}

impl Dpop {
    /// The default checks: [`DEFAULT_ALGORITHMS`], a [`DEFAULT_PROOF_WINDOW`] either way, a
    /// replay cache, no nonces.
    pub fn new() -> Self {
        Dpop(Arc::new(Shared {
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            window: DEFAULT_PROOF_WINDOW,
            // LRU, not moka's default frequency-based admission, which may decline to store a
            // new entry when full (its jti would then read as fresh again).
            replay: moka::sync::Cache::builder()
                .max_capacity(REPLAY_CAPACITY)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_live(DEFAULT_PROOF_WINDOW * 2)
                .build(),
            nonce_key: None,
        }))
    }

    /// Proofs must carry a server nonce (RFC 9449 §8–9), derived from `key` (32 bytes or more;
    /// the same on every replica). A proof without the current one is answered
    /// `use_dpop_nonce` with a `DPoP-Nonce` header; clients retry once with it.
    #[must_use]
    pub fn require_nonces(self, key: impl AsRef<[u8]>) -> Self {
        let digest: [u8; 32] = Sha256::new()
            .chain_update(b"tower-mcp-auth dpop nonce\0")
            .chain_update(key.as_ref())
            .finalize()
            .into();
        self.with(|shared| shared.nonce_key = Some(digest))
    }

    /// The accepted proof algorithms (HMAC ones are ignored: a proof key is public).
    #[must_use]
    pub fn algorithms(self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        let algorithms: Vec<Algorithm> = algorithms
            .into_iter()
            .filter(|a| a.family() != jsonwebtoken::AlgorithmFamily::Hmac)
            .collect();
        self.with(|shared| shared.algorithms = algorithms)
    }

    fn with(self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Shared {
            algorithms: self.0.algorithms.clone(),
            window: self.0.window,
            replay: self.0.replay.clone(),
            nonce_key: self.0.nonce_key,
        };
        change(&mut shared);
        Dpop(Arc::new(shared))
    }

    /// The algorithm names, for metadata (`dpop_signing_alg_values_supported`) and challenges.
    pub fn algorithm_names(&self) -> Vec<String> {
        self.0.algorithms.iter().map(|a| format!("{a:?}")).collect()
    }

    /// Whether proofs need a server nonce.
    pub fn requires_nonces(&self) -> bool {
        self.0.nonce_key.is_some()
    }

    /// The nonce to hand out now (`DPoP-Nonce`), when nonces are required.
    pub fn current_nonce(&self) -> Option<String> {
        let key = self.0.nonce_key.as_ref()?;
        Some(nonce_for(key, now() / NONCE_PERIOD))
    }

    /// Checks `proof` (the `DPoP` header's value) for a request of `method` to `url` (the
    /// public URL the client called; query and fragment ignored), presenting `access_token`
    /// (resource requests) or none (token requests).
    pub fn verify(
        &self,
        proof: &str,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<Proven, DpopError> {
        self.verify_for_any(proof, method, &[url], access_token)
    }

    /// [`verify`](Self::verify), the proof's `htu` being any of `urls` (the names one
    /// endpoint is reached by).
    pub(crate) fn verify_for_any(
        &self,
        proof: &str,
        method: &str,
        urls: &[&str],
        access_token: Option<&str>,
    ) -> Result<Proven, DpopError> {
        let invalid = DpopError::InvalidProof;
        let header_part = proof
            .split('.')
            .next()
            .ok_or(invalid("malformed DPoP proof"))?;
        let header: Map<String, Value> = B64
            .decode(header_part)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(invalid("malformed DPoP proof header"))?;
        if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
            return Err(invalid("the DPoP proof's typ is not dpop+jwt"));
        }
        let algorithm: Algorithm = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|a| a.parse().ok())
            .filter(|a| self.0.algorithms.contains(a))
            .ok_or(invalid("the DPoP proof's algorithm is not accepted"))?;
        let jwk = header
            .get("jwk")
            .and_then(Value::as_object)
            .ok_or(invalid("the DPoP proof carries no jwk"))?;
        // A private key in the header is a client bug that leaks it; a symmetric one proves
        // nothing to us.
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|member| jwk.contains_key(*member))
            || jwk.get("kty").and_then(Value::as_str) == Some("oct")
        {
            return Err(invalid("the DPoP proof's jwk is not a public key"));
        }
        let jkt = thumbprint(jwk).ok_or(invalid("the DPoP proof's jwk is not a usable key"))?;
        let key = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(Value::Object(jwk.clone()))
            .ok()
            .and_then(|jwk| DecodingKey::from_jwk(&jwk).ok())
            .ok_or(invalid("the DPoP proof's jwk is not a usable key"))?;
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        crate::validate::install_crypto_provider();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(proof, &key, &validation)
            .map_err(|_| invalid("the DPoP proof's signature does not verify with its jwk"))?
            .claims;
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or(invalid("the DPoP proof has no jti"))?;
        if claims.get("htm").and_then(Value::as_str) != Some(method) {
            return Err(invalid("the DPoP proof is for another method"));
        }
        let htu = claims
            .get("htu")
            .and_then(Value::as_str)
            .and_then(normalize_htu)
            .ok_or(invalid("the DPoP proof has no valid htu"))?;
        if !urls
            .iter()
            .any(|url| normalize_htu(url).as_ref() == Some(&htu))
        {
            return Err(invalid("the DPoP proof is for another URL"));
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_f64)
            .ok_or(invalid("the DPoP proof has no iat"))?;
        let window = self.0.window.as_secs_f64();
        if (iat - now() as f64).abs() > window {
            return Err(invalid("the DPoP proof is stale or from the future"));
        }
        match (access_token, claims.get("ath").and_then(Value::as_str)) {
            (Some(token), Some(ath)) => {
                let expected = B64.encode(Sha256::digest(token.as_bytes()));
                if !bool::from(subtle::ConstantTimeEq::ct_eq(
                    expected.as_bytes(),
                    ath.as_bytes(),
                )) {
                    return Err(invalid("the DPoP proof's ath is not this token's hash"));
                }
            }
            (Some(_), None) => return Err(invalid("the DPoP proof has no ath")),
            (None, _) => {}
        }
        if let Some(key) = &self.0.nonce_key {
            let presented = claims.get("nonce").and_then(Value::as_str);
            if !presented.is_some_and(|n| nonce_valid(key, n)) {
                return Err(DpopError::UseNonce);
            }
        }
        // Last, so a refused proof does not burn its jti. A full cache could have evicted an
        // unexpired jti: fail closed rather than take a replay for fresh. The count lags the
        // writes a little (moka counts in its maintenance), hence the margin.
        if self.0.replay.entry_count() >= REPLAY_CAPACITY / 10 * 9 {
            return Err(DpopError::Busy);
        }
        let seen: [u8; 32] = Sha256::new()
            .chain_update(jkt.as_bytes())
            .chain_update([0])
            .chain_update(jti.as_bytes())
            .finalize()
            .into();
        if !self.0.replay.entry(seen).or_insert(()).is_fresh() {
            return Err(invalid("the DPoP proof was used before (replay)"));
        }
        Ok(Proven { jkt })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn nonce_for(key: &[u8; 32], bucket: u64) -> String {
    // HMAC takes keys of any length: this cannot fail, and an empty nonce never validates.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(&bucket.to_be_bytes());
    format!("{bucket}.{}", B64.encode(mac.finalize().into_bytes()))
}

fn nonce_valid(key: &[u8; 32], nonce: &str) -> bool {
    let Some(bucket) = nonce
        .split_once('.')
        .and_then(|(bucket, _)| bucket.parse::<u64>().ok())
    else {
        return false;
    };
    let current = now() / NONCE_PERIOD;
    if bucket != current && bucket.checked_add(1) != Some(current) {
        return false;
    }
    let expected = nonce_for(key, bucket);
    bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        nonce.as_bytes(),
    ))
}

/// RFC 7638: the SHA-256 thumbprint of a public JWK, over its required members in
/// lexicographic order without whitespace.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let quoted = |s: &str| serde_json::to_string(s).ok();
    let canonical = match member("kty")? {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            quoted(member("crv")?)?,
            quoted(member("x")?)?,
            quoted(member("y")?)?
        ),
        "RSA" => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            quoted(member("e")?)?,
            quoted(member("n")?)?
        ),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            quoted(member("crv")?)?,
            quoted(member("x")?)?
        ),
        _ => return None,
    };
    Some(B64.encode(Sha256::digest(canonical.as_bytes())))
}

/// `htu` as compared (RFC 9449 §4.3): scheme, host (lowercased, default port dropped) and
/// path; query and fragment ignored. `None` for anything but an http(s) URL.
fn normalize_htu(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    Some(format!(
        "{}{}",
        parsed.origin().ascii_serialization(),
        parsed.path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk: Map<String, Value> = serde_json::from_str(r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).unwrap();
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn htu_ignores_query_fragment_case_and_default_port() {
        assert_eq!(
            normalize_htu("HTTPS://MCP.Example.com:443/mcp?x=1#f").as_deref(),
            Some("https://mcp.example.com/mcp")
        );
        assert_ne!(
            normalize_htu("https://mcp.example.com/mcp/"),
            normalize_htu("https://mcp.example.com/mcp")
        );
        assert_ne!(
            normalize_htu("https://mcp.example.com/MCP"),
            normalize_htu("https://mcp.example.com/mcp")
        );
        assert_eq!(normalize_htu("urn:x:y"), None);
    }

    #[test]
    fn nonces_age_out_after_two_periods_and_need_the_key() {
        let key = [7u8; 32];
        let bucket = now() / NONCE_PERIOD;
        assert!(nonce_valid(&key, &nonce_for(&key, bucket)));
        assert!(nonce_valid(&key, &nonce_for(&key, bucket - 1)));
        assert!(!nonce_valid(&key, &nonce_for(&key, bucket - 2)));
        assert!(!nonce_valid(&[8u8; 32], &nonce_for(&key, bucket)));
        assert!(!nonce_valid(&key, "garbage"));
    }
}
