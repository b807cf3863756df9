//! Shared test fixtures: keys, token minting, and real HTTP servers on 127.0.0.1.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_mcp_auth::validate::TokenValidator;
use tower_mcp_auth::{AuthContext, BearerLayer, ProtectedResource};

pub const ISSUER: &str = "https://as.test.example";
pub const HMAC_SECRET: &[u8] = b"integration-test-secret-32-bytes!";

pub const RSA1_KEY: &[u8] = include_bytes!("../keys/rsa1.key.pem");
pub const RSA1_PUB: &[u8] = include_bytes!("../keys/rsa1.pub.pem");
pub const RSA2_KEY: &[u8] = include_bytes!("../keys/rsa2.key.pem");
pub const EC256_KEY: &[u8] = include_bytes!("../keys/ec256.key.pem");
pub const EC256_PUB: &[u8] = include_bytes!("../keys/ec256.pub.pem");
pub const EC384_KEY: &[u8] = include_bytes!("../keys/ec384.key.pem");
pub const EC384_PUB: &[u8] = include_bytes!("../keys/ec384.pub.pem");
pub const ED_KEY: &[u8] = include_bytes!("../keys/ed.key.pem");
pub const ED_PUB: &[u8] = include_bytes!("../keys/ed.pub.pem");

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a valid token for `audience`.
pub fn claims(audience: &str, sub: &str, scope: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": audience, "sub": sub, "scope": scope,
        "client_id": "test-client", "iat": now(), "exp": now() + 300,
    })
}

pub fn encoding_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(&hmac_secret(alg))
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC256_KEY).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(EC384_KEY).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_KEY).unwrap(),
        _ => EncodingKey::from_rsa_pem(RSA1_KEY).unwrap(),
    }
}

/// A secret as long as the hash output, as RFC 7518 requires.
pub fn hmac_secret(alg: Algorithm) -> Vec<u8> {
    let len = match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    };
    HMAC_SECRET.iter().copied().cycle().take(len).collect()
}

pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A JWT with a hand-written header (for `alg: none`, `crit`, and other forgeries), signed
/// with HMAC-SHA256 over `secret` (or with an empty signature when `secret` is `None`).
pub fn forge(header: &Value, claims: &Value, secret: Option<&[u8]>) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let signing_input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = match secret {
        None => String::new(),
        Some(secret) => {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
            mac.update(signing_input.as_bytes());
            B64.encode(mac.finalize().into_bytes())
        }
    };
    format!("{signing_input}.{signature}")
}

/// A public JWK for a private key, with `kid`.
pub fn public_jwk(alg: Algorithm, pem: &[u8], kid: &str) -> Value {
    let key = match alg.family() {
        jsonwebtoken::AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem).unwrap(),
        jsonwebtoken::AlgorithmFamily::Ed => EncodingKey::from_ed_pem(pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

/// Binds 127.0.0.1 on a free port.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Serves `app` on `listener`, with `TCP_NODELAY` as the quickstart sets it (without it every
/// request on a kept-alive connection waits ~40 ms for a delayed ACK).
pub fn spawn(listener: TcpListener, app: axum::Router) {
    tokio::spawn(async move { axum::serve(no_delay(listener), app).await.unwrap() });
}

/// Like [`spawn`], with the TCP peer address in each request (`ConnectInfo`).
pub fn spawn_with_peer(listener: TcpListener, app: axum::Router) {
    tokio::spawn(async move {
        axum::serve(
            no_delay(listener),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
}

fn no_delay(
    listener: TcpListener,
) -> axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| tcp.set_nodelay(true).unwrap())
}

/// A browser: keeps cookies, follows no redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A protected echo endpoint at `/mcp`: it answers with the `AuthContext` it received and
/// counts its calls (a refused request must never reach it).
pub struct Protected {
    pub base: String,
    pub url: String,
    pub resource: ProtectedResource,
    pub inner_calls: Arc<AtomicUsize>,
}

pub async fn protected<V, F, L>(validator: F, configure: L) -> Protected
where
    V: TokenValidator,
    F: FnOnce(&ProtectedResource) -> V,
    L: FnOnce(BearerLayer<V>) -> BearerLayer<V>,
{
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let resource = ProtectedResource::builder(format!("{base}/mcp"))
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:tools"])
        .build()
        .unwrap();
    let layer = configure(BearerLayer::new(validator(&resource), resource.clone()));
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let calls = inner_calls.clone();
    let echo = tower::service_fn(move |req: Request<axum::body::Body>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let ctx = req.extensions().get::<AuthContext>().cloned();
        async move {
            let body = match ctx {
                Some(ctx) => json!({
                    "sub": ctx.subject(), "client_id": ctx.client_id(),
                    "scopes": ctx.scopes().iter().collect::<Vec<_>>(),
                    "aud": ctx.audience(), "iss": ctx.issuer(),
                }),
                None => json!(null),
            };
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
        }
    });
    let app = axum::Router::new()
        .nest_service("/mcp", ServiceBuilder::new().layer(layer).service(echo))
        .merge(resource.router());
    spawn(listener, app);
    Protected {
        url: format!("{base}/mcp"),
        base,
        resource,
        inner_calls,
    }
}

impl Protected {
    pub fn metadata_url(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base)
    }

    pub async fn post(&self, token: Option<&str>) -> reqwest::Response {
        let mut req = client().post(&self.url).body("{}");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    pub fn calls(&self) -> usize {
        self.inner_calls.load(Ordering::SeqCst)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub fn www_authenticate(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// A JWKS endpoint on 127.0.0.1 whose key set, availability and hit count the test controls.
#[derive(Clone, Default)]
pub struct JwksServer {
    pub keys: Arc<Mutex<Vec<Value>>>,
    pub hits: Arc<AtomicUsize>,
    pub down: Arc<AtomicBool>,
    pub url: String,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> JwksServer {
        let (listener, addr) = listener().await;
        let server = JwksServer {
            keys: Arc::new(Mutex::new(keys)),
            url: format!("http://{addr}/jwks"),
            ..Default::default()
        };
        let app = axum::Router::new()
            .route("/jwks", axum::routing::get(jwks_handler))
            .with_state(server.clone());
        spawn(listener, app);
        server
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn jwks_handler(State(server): State<JwksServer>) -> axum::response::Response {
    server.hits.fetch_add(1, Ordering::SeqCst);
    if server.down.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let keys = server.keys.lock().unwrap().clone();
    axum::Json(json!({ "keys": keys })).into_response()
}

/// An RFC 7662 introspection endpoint on 127.0.0.1 that requires Basic `rs:rs-secret` and
/// answers from a table of tokens.
#[derive(Clone, Default)]
pub struct IntrospectionServer {
    pub answers: Arc<Mutex<HashMap<String, Value>>>,
    pub hits: Arc<AtomicUsize>,
    pub down: Arc<AtomicBool>,
    pub url: String,
}

impl IntrospectionServer {
    pub async fn start() -> IntrospectionServer {
        let (listener, addr) = listener().await;
        let server = IntrospectionServer {
            url: format!("http://{addr}/introspect"),
            ..Default::default()
        };
        let app = axum::Router::new()
            .route("/introspect", axum::routing::post(introspect_handler))
            .with_state(server.clone());
        spawn(listener, app);
        server
    }

    pub fn answer(&self, token: &str, response: Value) {
        self.answers
            .lock()
            .unwrap()
            .insert(token.to_owned(), response);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn introspect_handler(
    State(server): State<IntrospectionServer>,
    headers: http::HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> axum::response::Response {
    server.hits.fetch_add(1, Ordering::SeqCst);
    if server.down.load(Ordering::SeqCst) {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    // "rs:rs-secret" in Basic.
    if headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some("Basic cnM6cnMtc2VjcmV0")
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let answer = server
        .answers
        .lock()
        .unwrap()
        .get(&token)
        .cloned()
        .unwrap_or_else(|| json!({ "active": false }));
    axum::Json(answer).into_response()
}

/// An HS256 token for tests that validate with `HMAC_SECRET`.
pub fn mint_hs256(issuer: &str, audience: &str, subject: &str, scope: &str) -> String {
    let claims = json!({
        "iss": issuer, "aud": audience, "sub": subject, "scope": scope,
        "client_id": "quickstart-dev", "exp": now() + 300,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HMAC_SECRET),
    )
    .unwrap()
}

/// The value of the hidden (or prefilled) form field `name` in `html`.
pub fn form_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The person's clicks on the dev login page `login` of the server at `base`: signs in as
/// `user`, approves the consent page, and returns the redirect back to the client.
pub async fn sign_in_and_approve(
    browser: &reqwest::Client,
    base: &str,
    login: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let consent = browser
        .post(format!("{base}/oauth/login"))
        .form(&[
            ("request", form_field(login, "request")),
            ("csrf", form_field(login, "csrf")),
            ("username", user.to_owned()),
            ("password", password.to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(consent.status(), 200, "the consent page");
    let html = consent.text().await.unwrap();
    let back = answer_consent(browser, base, &html, "approve").await;
    assert_eq!(back.status(), 303, "back to the client");
    back
}

/// The person's answer (`approve` or `deny`) on the consent page `html` of the server at `base`.
pub async fn answer_consent(
    browser: &reqwest::Client,
    base: &str,
    html: &str,
    decision: &str,
) -> reqwest::Response {
    browser
        .post(format!("{base}/oauth/consent"))
        .form(&[
            ("request", form_field(html, "request")),
            ("csrf", form_field(html, "csrf")),
            ("decision", decision.to_owned()),
        ])
        .send()
        .await
        .unwrap()
}

/// `GET url` as JSON.
pub async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The quickstart's embedded stack (MCP endpoint, authorization server, stand-in third party)
/// served on loopback ports, with the peer address known as when it runs.
pub struct QuickstartStack {
    /// The issuer and public URL.
    pub base: String,
    /// The MCP endpoint.
    pub mcp_url: String,
    /// The stand-in third party's URL.
    pub third_party: String,
}

/// The dev users' password in [`start_quickstart`]'s stack.
pub const QUICKSTART_PASSWORD: &str = "demo-password";

pub async fn start_quickstart() -> QuickstartStack {
    start_quickstart_with(|builder| builder).await
}

/// [`start_quickstart`] with its authorization server's builder changed by `configure` first.
pub async fn start_quickstart_with(
    configure: impl FnOnce(
        tower_mcp_auth::server::AuthServerBuilder,
    ) -> tower_mcp_auth::server::AuthServerBuilder,
) -> QuickstartStack {
    let (tp_listener, tp_addr) = listener().await;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mcp_url = format!("{base}/mcp");
    let third_party = format!("http://{tp_addr}");
    let (app, third_party_app) = crate::quickstart::embedded_stack(
        configure(crate::quickstart::auth_server_builder(
            &base,
            &mcp_url,
            QUICKSTART_PASSWORD,
        )),
        &mcp_url,
        &third_party,
        QUICKSTART_PASSWORD,
        None,
    )
    .unwrap();
    spawn(tp_listener, third_party_app);
    spawn_with_peer(listener, app);
    QuickstartStack {
        base,
        mcp_url,
        third_party,
    }
}

/// The audit events (`tower_mcp_auth::audit`, debug and up) written while its subscriber is the
/// default, as text lines.
#[derive(Clone, Default)]
pub struct AuditLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for AuditLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AuditLog {
    /// A subscriber writing the audit events here.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter("tower_mcp_auth::audit=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// Captures this thread's events until the guard drops: in a `#[tokio::test]` (one thread)
    /// that includes the servers it spawned.
    pub fn capture(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(self.subscriber())
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Installs the pinned npm packages of `dir` with `npm ci` unless every `marker` file
/// (relative to its `node_modules`) exists already.
pub async fn npm_ci(dir: std::path::PathBuf, markers: &[&str]) {
    if markers
        .iter()
        .all(|m| dir.join("node_modules").join(m).exists())
    {
        return;
    }
    let status = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .await
        .expect("npm (Node.js) is needed for this test");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// The 403 challenge rmcp's client surfaced for a failed call, from the error's source chain.
pub fn insufficient_scope(
    error: &(dyn std::error::Error + 'static),
) -> rmcp::transport::streamable_http_client::InsufficientScopeError {
    use rmcp::transport::streamable_http_client::InsufficientScopeError;
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<InsufficientScopeError>() {
            return InsufficientScopeError::new(
                found.www_authenticate_header.clone(),
                found.required_scope.clone(),
            );
        }
        current = e.source();
    }
    panic!("not an insufficient_scope refusal: {error:?}");
}

/// A tool result's content as JSON text.
pub fn text_of(result: &rmcp::model::CallToolResult) -> String {
    serde_json::to_value(&result.content).unwrap().to_string()
}

/// An rmcp client connected to `mcp_url` with the tokens `oauth` obtained, and its
/// authorization manager (for a later step-up).
pub async fn authorized_client(
    oauth: rmcp::transport::auth::OAuthState,
    mcp_url: &str,
) -> (
    rmcp::service::RunningService<rmcp::service::RoleClient, ()>,
    std::sync::Arc<tokio::sync::Mutex<rmcp::transport::auth::AuthorizationManager>>,
) {
    use rmcp::ServiceExt;
    let auth = rmcp::transport::auth::AuthClient::new(
        reqwest::Client::new(),
        oauth.into_authorization_manager().unwrap(),
    );
    let manager = auth.auth_manager.clone();
    let transport = rmcp::transport::StreamableHttpClientTransport::with_client(
        auth,
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            mcp_url,
        ),
    );
    (().serve(transport).await.expect("initialize"), manager)
}

/// A Redis server the tests may stop and start again: `redis-server` (the `REDIS_SERVER`
/// binary, else the one on `PATH`) on a loopback port, without persistence, ended with the
/// test process (a shell watchdog kills it when its parent is gone).
#[cfg(feature = "redis")]
pub struct RedisProcess {
    pub port: u16,
    child: Option<tokio::process::Child>,
    /// Where it keeps its append-only file, if it keeps one.
    dir: Option<std::path::PathBuf>,
}

#[cfg(feature = "redis")]
impl RedisProcess {
    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> RedisProcess {
        Self::start_with(false).await
    }

    /// Starts one that keeps what it acknowledged across a restart (append-only file, fsync
    /// on every write), as a production Redis does.
    pub async fn start_persistent() -> RedisProcess {
        Self::start_with(true).await
    }

    async fn start_with(persistent: bool) -> RedisProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = persistent.then(|| {
            let dir = std::env::temp_dir().join(format!("tower-mcp-auth-redis-{port}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        });
        let mut redis = RedisProcess {
            port,
            child: None,
            dir,
        };
        redis.resume().await;
        redis
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on its port (after [`stop`](Self::stop)): with what it had if it is
    /// persistent, else empty.
    pub async fn resume(&mut self) {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let persistence = match &self.dir {
            Some(dir) => format!(
                "--dir {} --appendonly yes --appendfsync always",
                dir.display()
            ),
            None => "--appendonly no".to_owned(),
        };
        // The watchdog ends the server when the test process ($PPID of the shell) is gone.
        let script = format!(
            "{binary} --port {port} --bind 127.0.0.1 --save '' {persistence} --daemonize no & \
             server=$!; parent=$PPID; \
             while kill -0 $parent 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 1; done; \
             kill $server 2>/dev/null",
            port = self.port
        );
        let child = tokio::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is needed for this test (apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..200 {
            if redis_ping(self.port).await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!(
            "redis-server did not start on port {} (is it installed? apt-get install redis-server)",
            self.port
        );
    }

    /// Stops the server (SHUTDOWN NOSAVE) and waits until its port is closed.
    pub async fn stop(&mut self) {
        use tokio::io::AsyncWriteExt;
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
            let _ = stream.write_all(b"SHUTDOWN NOSAVE\r\n").await;
        }
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

#[cfg(feature = "redis")]
async fn redis_ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok()
        && stream.read_exact(&mut reply).await.is_ok()
        && &reply == b"+PONG\r\n"
}

/// The Redis the tests share: `REDIS_URL` (`.ci/run` starts one), else one started for this
/// test process. Each test keeps its keys apart with [`redis_store`]'s random prefix.
#[cfg(feature = "redis")]
pub async fn redis_url() -> String {
    static SHARED: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    if let Ok(url) = std::env::var("REDIS_URL") {
        return url;
    }
    SHARED
        .get_or_init(|| async {
            let redis = RedisProcess::start().await;
            let url = redis.url();
            // Lives as long as the test process (the watchdog ends it after).
            std::mem::forget(redis);
            url
        })
        .await
        .clone()
}

/// A store on the shared Redis under a prefix of its own (tests run in parallel).
#[cfg(feature = "redis")]
pub async fn redis_store() -> tower_mcp_auth::store::RedisStore {
    let prefix: u64 = rand::random();
    tower_mcp_auth::store::RedisStore::builder(redis_url().await)
        .prefix(format!("test-{prefix:x}:"))
        .connect()
        .await
        .expect("the test Redis")
}

#[cfg(feature = "redis")]
impl Drop for RedisProcess {
    /// Shuts the server down: killing its watchdog shell alone would leave it running.
    fn drop(&mut self) {
        use std::io::Write;
        if self.child.is_some()
            && let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = stream.write_all(b"SHUTDOWN NOSAVE\r\n");
        }
    }
}
