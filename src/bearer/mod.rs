//! Middleware that requires a valid OAuth bearer token on every request, the way the MCP
//! authorization specification asks of a resource server.
//!
//! - The token is read from the one `Authorization: Bearer` header (RFC 6750 §2.1); a repeated
//!   header or a malformed token is `400 invalid_request`; a token in the query string is never
//!   read.
//! - A [`TokenValidator`] checks it; the result is cached by a hash of the token until the token
//!   expires, so repeated requests do no signature work.
//! - On success the [`AuthContext`] goes into the request extensions and the request (body
//!   untouched, still streaming) goes to the inner service.
//! - Otherwise the answer is `401` with `WWW-Authenticate: Bearer resource_metadata="…",
//!   scope="…"` (plus `error="invalid_token"` and a description when a token was presented),
//!   `403 insufficient_scope` when a layer-wide scope is missing, or `503` when the identity
//!   provider cannot be reached (a transient failure must not read as a bad token).
//! - Stateful MCP sessions (`Mcp-Session-Id`) are bound to the principal that opened them; a
//!   request naming another principal's session gets `404`, as an unknown session would.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode, header};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use jsonwebtoken::Algorithm;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_mcp_auth::{AuthContext, BearerLayer, ProtectedResource};
//! use tower_mcp_auth::validate::{JwtKey, JwtValidator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
//!     .authorization_server("https://auth.example.com")
//!     .scopes_supported(["mcp:tools"])
//!     .build()?;
//! let validator = JwtValidator::builder("https://auth.example.com", resource.resource())
//!     .key(JwtKey::hmac(b"an example secret of 32 bytes!!!", Algorithm::HS256)?)
//!     .build()?;
//!
//! let service = ServiceBuilder::new()
//!     .layer(BearerLayer::new(validator, resource))
//!     .service_fn(|req: Request<Full<Bytes>>| async move {
//!         let who = req.extensions().get::<AuthContext>().map(|a| a.subject().to_owned());
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who.unwrap_or_default()))))
//!     });
//!
//! let response = service.oneshot(Request::new(Full::new(Bytes::new()))).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(
//!     response.headers()[header::WWW_AUTHENTICATE],
//!     r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="mcp:tools""#
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Where to put it
//!
//! Wrap the MCP service only (`Router::nest_service("/mcp", ServiceBuilder::new()
//! .layer(bearer).service(mcp))`) and leave the metadata routes of
//! [`ProtectedResource::router`](crate::ProtectedResource::router) outside it. Put a CORS layer
//! (if browsers call the server) *outside* the bearer layer: preflight requests carry no token.
//!
//! [`TokenValidator`]: crate::validate::TokenValidator
//! [`AuthContext`]: crate::AuthContext

mod admission;
mod cache;
pub(crate) mod credentials;
#[cfg(feature = "rate-limit")]
mod failures;
mod future;
mod layer;
mod service;
mod session;

#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub use self::failures::{AuthFailureLimit, DEFAULT_TRACKED_ADDRESSES};
pub use self::future::ResponseFuture;
pub use self::layer::{
    BearerLayer, DEFAULT_SESSION_CAPACITY, DEFAULT_SESSION_IDLE, DEFAULT_TOKEN_CACHE_CAPACITY,
};
pub use self::service::BearerService;

/// Body of the bearer service's responses: the inner service's body, or the layer's own small
/// JSON refusal.
pub type ResponseBody<B> = http_body_util::Either<B, http_body_util::Full<bytes::Bytes>>;
