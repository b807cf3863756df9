//! MCP wire facts every layer shares: header names, JSON-RPC error codes, the JSON-RPC error
//! responses the layers answer with, and SSE framing.

pub(crate) mod sse;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// The error of a boxed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of the responses of the policy and ATAG layers.
pub type LayerBody = UnsyncBoxBody<Bytes, BoxError>;

/// `Mcp-Session-Id` (Streamable HTTP, revisions up to 2025-11-25).
pub(crate) const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `DPoP` (RFC 9449): the proof.
pub(crate) const DPOP: HeaderName = HeaderName::from_static("dpop");
/// `DPoP-Nonce` (RFC 9449 §8): the server nonce a proof must carry.
pub(crate) const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");
/// `MCP-Protocol-Version`.
pub(crate) const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// JSON-RPC error codes the layers answer with.
pub mod code {
    /// JSON-RPC: the body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON-RPC: the message is not a valid request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// JSON-RPC: invalid parameters (a refused `requestState`).
    pub const INVALID_PARAMS: i64 = -32602;
    /// JSON-RPC: an internal error (a misconfigured stack, a failing dependency).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A refusal by policy (implementation-defined server error range).
    pub const FORBIDDEN: i64 = -32003;
    /// A header that disagrees with the body (revision 2026-07-28).
    pub const HEADER_MISMATCH: i64 = -32020;
    /// Too many requests (implementation-defined server error range), with HTTP 429.
    pub const RATE_LIMITED: i64 = -32029;
    /// URL elicitation required (revision 2025-11-25).
    pub const URL_ELICITATION_REQUIRED: i64 = -32042;
}

/// A JSON body with `status`; never cached (errors and per-caller answers alike).
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<LayerBody> {
    let bytes = Bytes::from(body.to_string());
    let mut response = Response::new(
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    json_no_store(response.headers_mut());
    response
}

/// Marks a response JSON and never to be cached: refusals and per-caller answers must not be
/// replayed by a proxy to someone else.
pub(crate) fn json_no_store(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A JSON-RPC error response for request `id`, with optional `data`.
pub(crate) fn rpc_error(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response<LayerBody> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json_response(
        status,
        &json!({ "jsonrpc": "2.0", "id": id, "error": error }),
    )
}

/// A `tools/call` result that failed with `text` (`isError`); revision 2026-07-28 requires
/// every result to say what it is (`resultType`).
pub(crate) fn tool_error(id: &Value, text: &str, modern: bool) -> Response<LayerBody> {
    let mut result = json!({"content": [{"type": "text", "text": text}], "isError": true});
    if modern {
        result["resultType"] = json!("complete");
    }
    json_response(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}
