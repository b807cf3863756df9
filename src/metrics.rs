//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`, default).
//!
//! Nothing is recorded, and no exporter is pulled in, unless the application installs a
//! recorder (`metrics-exporter-prometheus`, an OpenTelemetry bridge, …): without one, each
//! emission is one atomic load. `metrics` was chosen over OpenTelemetry's meter API because it
//! is the facade the Rust server ecosystem already records into (tower-http, rmcp's users,
//! `metrics-exporter-prometheus`), needs no SDK at compile time, and costs nothing when off.
//!
//! Labels never carry a token, a subject, a client id or any other value a caller chooses: only
//! values from fixed sets, or names the operator configured (backend and service ids).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `mcp_auth_requests_total` | counter | `layer` (`bearer`, `policy`, `gateway`), `decision` (`allowed`, `401`, `400`, `403`, `404`, `429`, `502`, `503`, `504`), `reason` | every request each layer decided |
//! | `mcp_auth_token_validation_seconds` | histogram | `outcome` (`valid`, `invalid`, `unavailable`) | a token validation on a cache miss (signature, keys, introspection) |
//! | `mcp_auth_token_cache_total` | counter | `result` (`hit`, `miss`) | bearer token cache lookups |
//! | `mcp_auth_policy_denials_total` | counter | `kind` (`tool`, `prompt`, `resource`, `method`), `name` (a name with an exact rule in the policy, else `other`), `reason` | calls the policy refused |
//! | `mcp_auth_tokens_issued_total` | counter | `grant` (`authorization_code`, `refresh_token`, `client_credentials`) | token endpoint issuances |
//! | `mcp_auth_token_endpoint_errors_total` | counter | `grant` (as above, or `other`), `error` (the RFC 6749 error code) | token endpoint refusals |
//! | `mcp_auth_registrations_total` | counter | `outcome` (`registered`, or the RFC 7591 error code) | dynamic client registrations |
//! | `mcp_auth_jwks_fetches_total` | counter | `outcome` (`ok`, `error`) | an identity provider's key set fetched (first use, unknown `kid`, refresh) |
//! | `mcp_auth_outbound_refused_total` | counter | `reason` (`address_policy`) | outbound fetches refused before connecting (a name resolving to an address the [`AddressPolicy`](crate::address::AddressPolicy) refuses) |
//! | `mcp_auth_atag_events_total` | counter | `service` (configured id), `event` (`injected`, `challenge`, `refreshed`, `refresh_refused`, `refresh_failed`, `vault_error`) | third-party tokens handed to tools, connect challenges, vault failures |
//! | `mcp_auth_gateway_backend_responses_total` | counter | `backend` (configured name), `status` (`2xx`, `4xx`, `5xx`, `error`, `timeout`) | answers from backends |
//!
//! A Grafana-style query list is in the README (section Operations).

/// `mcp_auth_outbound_refused_total`.
pub const OUTBOUND_REFUSED: &str = "mcp_auth_outbound_refused_total";
/// `mcp_auth_requests_total`.
pub const REQUESTS: &str = "mcp_auth_requests_total";
/// `mcp_auth_token_validation_seconds`.
pub const VALIDATION_SECONDS: &str = "mcp_auth_token_validation_seconds";
/// `mcp_auth_token_cache_total`.
pub const TOKEN_CACHE: &str = "mcp_auth_token_cache_total";
/// `mcp_auth_policy_denials_total`.
pub const POLICY_DENIALS: &str = "mcp_auth_policy_denials_total";
/// `mcp_auth_tokens_issued_total`.
pub const TOKENS_ISSUED: &str = "mcp_auth_tokens_issued_total";
/// `mcp_auth_token_endpoint_errors_total`.
pub const TOKEN_ERRORS: &str = "mcp_auth_token_endpoint_errors_total";
/// `mcp_auth_registrations_total`.
pub const REGISTRATIONS: &str = "mcp_auth_registrations_total";
/// `mcp_auth_jwks_fetches_total`.
pub const JWKS_FETCHES: &str = "mcp_auth_jwks_fetches_total";
/// `mcp_auth_atag_events_total`.
pub const ATAG_EVENTS: &str = "mcp_auth_atag_events_total";
/// `mcp_auth_gateway_backend_responses_total`.
pub const GATEWAY_BACKEND_RESPONSES: &str = "mcp_auth_gateway_backend_responses_total";

/// Counts one event under a key built at compile time (`count!(REQUESTS, "layer" => "bearer",
/// …)`): no allocation, no hashing of labels per call, so the hot path pays one thread-local
/// and one atomic load when no recorder is installed.
macro_rules! count {
    ($name:expr $(, $k:literal => $v:literal)* $(,)?) => {{
        #[cfg(feature = "metrics")]
        {
            static LABELS: [::metrics::Label; { [$($k),*].len() }] =
                [$(::metrics::Label::from_static_parts($k, $v)),*];
            static KEY: ::metrics::Key = ::metrics::Key::from_static_parts($name, &LABELS);
            $crate::metrics::increment(&KEY);
        }
    }};
}
pub(crate) use count;

/// Adds one to the counter `key` in the current recorder.
#[cfg(feature = "metrics")]
#[inline]
pub(crate) fn increment(key: &'static metrics::Key) {
    static METADATA: metrics::Metadata<'static> =
        metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(1));
}

/// A layer's decision on a request, when the labels are known only at run time (cold paths).
#[inline]
pub(crate) fn request(layer: &'static str, decision: &'static str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(REQUESTS, "layer" => layer, "decision" => decision, "reason" => reason)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (layer, decision, reason);
}

/// A token validation (a cache miss), how it ended and how long it took.
#[inline]
pub(crate) fn validation(outcome: &'static str, seconds: f64) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(VALIDATION_SECONDS, "outcome" => outcome).record(seconds);
    #[cfg(not(feature = "metrics"))]
    let _ = (outcome, seconds);
}

/// A refusal by the policy.
#[inline]
pub(crate) fn policy_denial(kind: &'static str, name: &str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(POLICY_DENIALS, "kind" => kind, "name" => name.to_owned(), "reason" => reason)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, name, reason);
}

/// A counter whose labels are known only at run time, from fixed sets (cold paths).
#[cfg_attr(not(feature = "server"), allow(dead_code))]
#[inline]
pub(crate) fn labelled(name: &'static str, labels: &[(&'static str, &'static str)]) {
    #[cfg(feature = "metrics")]
    {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::from_static_parts(k, v))
            .collect();
        metrics::counter!(name, labels).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (name, labels);
}

/// A backend's answer (or its absence), by status class.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
#[inline]
pub(crate) fn backend_response(backend: &str, status: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(GATEWAY_BACKEND_RESPONSES, "backend" => backend.to_owned(), "status" => status)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, status);
}

/// An ATAG event for the configured service `service`.
#[cfg_attr(not(feature = "atag"), allow(dead_code))]
#[inline]
pub(crate) fn atag_event(service: &str, event: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(ATAG_EVENTS, "service" => service.to_owned(), "event" => event).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (service, event);
}

/// The status class label of an HTTP status.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
