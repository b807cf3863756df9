//! A load harness: what the whole authorization stack costs per MCP `tools/call`, end to end
//! over loopback HTTP, next to the same rmcp server with no authorization at all.
//!
//! ```text
//! cargo run --release --example load -- [--rounds N] [--seconds S] [--concurrency C]
//!                                       [--users N] [--uses K] [--quick]
//! ```
//!
//! Two servers start in this process on ephemeral `127.0.0.1` ports, hosting the same stateless
//! rmcp Streamable HTTP tool server (JSON responses, no `initialize` needed):
//! - `no auth`: the bare rmcp service at `/mcp` (sent the same `Authorization` header, which it
//!   ignores, so both servers read the same bytes);
//! - `full stack`: `/mcp` behind `OriginLayer` → `BearerLayer` (validator of an in-process
//!   `AuthServer`) → `ToolPolicyLayer` (about 50 rules) → `AtagLayer` (GitHub in the vault).
//!
//! A keep-alive HTTP/1.1 client with `--concurrency` requests in flight calls `echo` (or
//! `github_whoami`) and checks every answer. After a warm-up, each round runs, for `--seconds`
//! each: `no auth`; `full stack, warm token` (one ES256 token, validated once, then served from
//! the bearer layer's cache); `bearer layer only, warm token` (the same server behind the
//! Origin and bearer layers alone, at `/bearer-only`: what the policy and ATAG layers add is the
//! difference); `bearer + policy, warm token` (at `/no-atag`, the ATAG layer left out);
//! `full stack, many users` (`--users` fresh tokens of distinct
//! subjects, each used `--uses` times round-robin, so the first use of each is a cold signature
//! validation; this variant also stops when its tokens are used up); `full stack, github tool
//! (vault)` (the warm token calling a tool whose GitHub token the ATAG layer opens from the
//! encrypted vault and injects).
//!
//! Reading it: one line per variant per round (requests, req/s, p50 and p99 latency, and the
//! process's CPU time per request, client and servers together), then the median over rounds
//! of each figure. The client shares the cores with the servers, so absolute req/s and
//! latencies are specific to this machine and its load; the figure to compare across machines
//! and commits is the last line, `full stack / no auth throughput ratio` (the median of the
//! per-round ratios of warm-token to no-auth throughput): 1.00 would be a free stack. On a
//! shared VM single rounds move by 10% or more, CPU time per request too: trust medians over
//! several rounds, and the in-process benches (`cargo bench --bench atag -- full_stack`) for
//! differences of a few microseconds.

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_router};
use serde_json::json;
use tower::ServiceBuilder;
use tower_mcp_auth::atag::{Atag, External, ExternalService, TokenSet};
use tower_mcp_auth::origin::OriginLayer;
use tower_mcp_auth::policy::ToolPolicy;
use tower_mcp_auth::server::AuthServer;
use tower_mcp_auth::{Auth, BearerLayer, ProtectedResource};

/// The scope every token carries, and all `echo` needs (the policy's default).
const BASE_SCOPE: &str = "mcp:tools";
/// The subject of the warm token (the one user connected to GitHub).
const WARM_SUBJECT: &str = "load-warm";
/// What `github_whoami` answers the warm token's user (GitHub connected, scope `repo`).
const GITHUB_ANSWER: &str = "load-warm at github with scopes repo";
/// The MCP revision the client speaks (stateless: sent on every request).
const PROTOCOL_VERSION: &str = "2025-06-18";
/// The variants, in the order each round runs them.
const VARIANTS: [&str; 6] = [
    "no auth",
    "full stack, warm token",
    "bearer layer only, warm token",
    "bearer + policy, warm token",
    "full stack, many users",
    "full stack, github tool (vault)",
];
/// Where the same server is served behind the Origin and bearer layers only, beside the full
/// stack: the two together tell the bearer layer's share from the policy and ATAG layers'.
const BEARER_ONLY_PATH: &str = "/bearer-only";
/// And behind the Origin, bearer and policy layers, without ATAG.
const NO_ATAG_PATH: &str = "/no-atag";
/// The command line, for `--help` and mistakes.
const USAGE: &str = "usage: load [--rounds N] [--seconds S] [--concurrency C] [--users N] \
                     [--uses K] [--quick]";

/// The tool server both variants host.
#[derive(Clone, Default)]
struct LoadTools;

/// Arguments of `echo`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// What to send back.
    text: String,
}

#[tool_router(server_handler)]
impl LoadTools {
    #[tool(description = "Returns its text argument")]
    async fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Says which GitHub token the gateway injected (does not call GitHub)")]
    async fn github_whoami(&self, Auth(auth): Auth, External(github): External) -> String {
        format!(
            "{} at {} with scopes {}",
            auth.subject(),
            github.service(),
            github.scopes().join(" ")
        )
    }
}

/// The run's settings, from the command line.
#[derive(Debug, Clone)]
struct Settings {
    rounds: usize,
    seconds: f64,
    concurrency: usize,
    users: usize,
    uses: usize,
}

impl Settings {
    /// Parses the flags in order (so `--quick --rounds 3` runs 3 short rounds); `--help`
    /// prints the usage and exits.
    fn from_args() -> Result<Settings, String> {
        let mut settings = Settings {
            rounds: 5,
            seconds: 5.0,
            concurrency: 32,
            users: 10_000,
            uses: 4,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
            match flag.as_str() {
                "--rounds" => settings.rounds = parse(&flag, &value()?)?,
                "--seconds" => settings.seconds = parse(&flag, &value()?)?,
                "--concurrency" => settings.concurrency = parse(&flag, &value()?)?,
                "--users" => settings.users = parse(&flag, &value()?)?,
                "--uses" => settings.uses = parse(&flag, &value()?)?,
                "--quick" => (settings.rounds, settings.seconds, settings.users) = (1, 1.0, 500),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            }
        }
        let counts = [
            settings.rounds,
            settings.concurrency,
            settings.users,
            settings.uses,
        ];
        let seconds_valid = settings.seconds.is_finite() && settings.seconds > 0.0;
        if counts.contains(&0) || !seconds_valid {
            return Err(format!("every setting must be positive\n{USAGE}"));
        }
        Ok(settings)
    }

    /// How long each time-bounded variant runs per round.
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

/// Parses the value of `flag`.
fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: `{value}` is not a valid value\n{USAGE}"))
}

/// Which tool a variant calls.
#[derive(Clone, Copy)]
enum ToolCall {
    Echo,
    GithubWhoami,
}

/// The `Authorization` headers a variant sends.
enum Credentials {
    Warm(HeaderValue),
    /// Each token used `uses` times, round-robin: `i`-th request, token `i % len`.
    Many {
        tokens: Vec<HeaderValue>,
        uses: usize,
    },
}

/// One variant: where, what and with which token.
struct Variant {
    name: &'static str,
    uri: Uri,
    call: ToolCall,
    credentials: Credentials,
}

/// What one variant did in one round.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    requests: usize,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Process CPU time (client and servers, all threads) per request, in microseconds: less
    /// noisy than throughput on a shared machine, and the difference between two variants is
    /// what the stack costs a request, whatever it waits on.
    cpu_us: f64,
}

/// CPU time this process has used (user and system, all threads), from `/proc/self/stat`;
/// `None` where that is not available.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name (which may hold spaces): utime and stime
    // are the 12th and 13th, in clock ticks of 1/100 s (USER_HZ on every Linux).
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// State shared by the workers of one run.
#[derive(Default)]
struct Progress {
    /// The next request's index (many users: which token, and whether its first use).
    next: AtomicUsize,
    /// Set on the first failure: the workers stop.
    stop: AtomicBool,
    /// How many requests failed, and the first failure.
    failures: Mutex<(u64, Option<String>)>,
}

impl Progress {
    /// Counts a failed request, keeps the first one's description, and stops the run.
    fn fail(&self, description: String) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.0 += 1;
        failures.1.get_or_insert(description);
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// About 50 rules of the kinds real deployments write: exact names, globs (one needing GitHub
/// through ATAG), regular expressions and methods. `echo` matches none: it needs the default.
fn policy() -> Result<ToolPolicy, Box<dyn Error>> {
    let mut builder = ToolPolicy::builder()
        .default_scopes([BASE_SCOPE])
        .tool("github_*", [BASE_SCOPE])
        .needs_service("github", ["repo"]);
    let areas = [
        "issues", "pulls", "files", "calendar", "mail", "tickets", "docs", "builds",
    ];
    for area in areas {
        for verb in ["list", "get"] {
            builder = builder.tool(format!("{area}_{verb}"), [format!("{area}:read")]);
        }
        for verb in ["create", "update", "delete"] {
            builder = builder.tool(format!("{area}_{verb}"), [format!("{area}:write")]);
        }
    }
    Ok(builder
        .tool("admin_*", ["admin"])
        .tool("*_export", ["data:export"])
        .tool("billing_*", ["billing:read"])
        .deny_tool("debug_*")
        .tool_regex("^(drop|truncate)_[a-z_]+$", ["admin"])
        .tool_regex("^report_[0-9]{4}$", ["reports:read"])
        .method("tools/list", [BASE_SCOPE])
        .method("resources/read", ["files:read"])
        .scope_separator(":")
        .build()?)
}

/// The rmcp service: stateless (no session, no `initialize`), JSON answers, loopback hosts.
fn mcp_service() -> StreamableHttpService<LoadTools, NeverSessionManager> {
    StreamableHttpService::new(
        || Ok(LoadTools),
        Arc::new(NeverSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            // rmcp checks `Host` against this list (DNS rebinding); no port: any port.
            .with_allowed_hosts(["127.0.0.1"]),
    )
}

/// A TCP listener whose connections send each write at once (see quickstart's `bind`).
type NoDelayListener = axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;

/// Turns Nagle's algorithm off, so a response does not wait for the client's delayed ACK.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        eprintln!("cannot set TCP_NODELAY: {e}");
    }
}

/// Binds an ephemeral loopback port, with `TCP_NODELAY` on every connection; and the port.
async fn bind() -> std::io::Result<(NoDelayListener, u16)> {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    Ok((listener.tap_io(no_delay as fn(&mut _)), port))
}

/// Serves `app` in the background.
fn serve(listener: NoDelayListener, app: Router) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("a load test server stopped: {e}");
        }
    });
}

/// A signed access token with the claims our token endpoint writes (`mint_access_token`).
fn access_token(
    auth: &AuthServer,
    resource: &str,
    subject: &str,
) -> Result<String, Box<dyn Error>> {
    let issued_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let jti = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let claims = json!({
        "iss": auth.issuer(), "sub": subject, "client_id": "load-client",
        "aud": resource, "scope": BASE_SCOPE, "iat": issued_at,
        "exp": issued_at + 3600, "jti": jti,
    });
    Ok(auth.signing_keys().sign(&claims, "at+jwt")?)
}

/// `Authorization: Bearer …` for `token`.
fn bearer_header(token: &str) -> Result<HeaderValue, Box<dyn Error>> {
    Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
}

/// The request body a worker sends, and the text a correct answer holds.
fn call_body(call: ToolCall, worker: usize) -> (Bytes, String) {
    let text = format!("load worker {worker}");
    let (name, arguments, expected) = match call {
        ToolCall::Echo => (
            "echo",
            json!({ "text": text }),
            format!("\"text\":\"{text}\""),
        ),
        ToolCall::GithubWhoami => ("github_whoami", json!({}), GITHUB_ANSWER.to_owned()),
    };
    let body = json!({"jsonrpc": "2.0", "id": worker, "method": "tools/call",
                      "params": {"name": name, "arguments": arguments}});
    (Bytes::from(body.to_string()), expected)
}

/// One POST; the status and the whole body.
async fn post(
    client: &HttpClient,
    uri: &Uri,
    body: Bytes,
    authorization: Option<HeaderValue>,
) -> Result<(StatusCode, Bytes), Box<dyn Error + Send + Sync>> {
    let mut request = Request::post(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL_VERSION);
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    let response = client.request(request.body(Full::new(body))?).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// One worker: requests one after another until the deadline, a failure, or (many users) the
/// tokens' uses run out; the latency of each successful request in microseconds.
async fn worker(
    client: HttpClient,
    variant: Arc<Variant>,
    progress: Arc<Progress>,
    id: usize,
    deadline: Instant,
) -> Vec<u32> {
    let (body, expected) = call_body(variant.call, id);
    let mut latencies = Vec::with_capacity(16 * 1024);
    while Instant::now() < deadline && !progress.stop.load(Ordering::Relaxed) {
        let authorization = match &variant.credentials {
            Credentials::Warm(value) => Some(value.clone()),
            Credentials::Many { tokens, uses } => {
                let i = progress.next.fetch_add(1, Ordering::Relaxed);
                if i >= tokens.len() * uses {
                    break;
                }
                Some(tokens[i % tokens.len()].clone())
            }
        };
        let started = Instant::now();
        match post(&client, &variant.uri, body.clone(), authorization).await {
            Ok((status, answer)) => {
                let text = String::from_utf8_lossy(&answer);
                if status == StatusCode::OK
                    && text.contains(&expected)
                    && !text.contains("\"isError\":true")
                {
                    let micros = started.elapsed().as_micros();
                    latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                } else {
                    progress.fail(format!("HTTP {status}, body: {text}"));
                }
            }
            Err(e) => progress.fail(format!("request failed: {e}")),
        }
    }
    latencies
}

/// Runs `variant` with `concurrency` workers for at most `duration`; an error names the first
/// failed request.
async fn run(
    client: &HttpClient,
    variant: Arc<Variant>,
    concurrency: usize,
    duration: Duration,
) -> Result<Measurement, Box<dyn Error>> {
    let progress = Arc::new(Progress::default());
    let cpu_before = process_cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|id| {
            let (client, variant, progress) = (client.clone(), variant.clone(), progress.clone());
            tokio::spawn(worker(client, variant, progress, id, deadline))
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in workers {
        latencies.extend(handle.await?);
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map_or(Duration::ZERO, |(after, before)| {
            after.saturating_sub(before)
        });
    let (failures, first) = &*progress.failures.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(first) = first {
        let name = variant.name;
        return Err(format!("`{name}`: {failures} request(s) failed; first: {first}").into());
    }
    if latencies.is_empty() {
        return Err(format!("`{}`: no request completed", variant.name).into());
    }
    latencies.sort_unstable();
    let percentile_ms = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        f64::from(latencies[rank - 1]) / 1000.0
    };
    Ok(Measurement {
        requests: latencies.len(),
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(0.50),
        p99_ms: percentile_ms(0.99),
        cpu_us: cpu.as_secs_f64() * 1e6 / latencies.len() as f64,
    })
}

/// The median (the mean of the middle two for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median of the per-round throughput ratios of `variant` to `baseline`.
fn throughput_ratio(variant: &[Measurement], baseline: &[Measurement]) -> f64 {
    let ratios = variant.iter().zip(baseline);
    median(ratios.map(|(v, b)| v.throughput / b.throughput).collect())
}

/// Prints one measurement line.
fn report(label: &str, name: &str, m: &Measurement) {
    println!(
        "{label:<10} {name:<32} {:>8} req {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   {:>6.1} µs CPU/req",
        m.requests, m.throughput, m.p50_ms, m.p99_ms, m.cpu_us
    );
}

/// Starts the bare rmcp service; its endpoint.
async fn start_no_auth() -> Result<Uri, Box<dyn Error>> {
    let (listener, port) = bind().await?;
    serve(listener, Router::new().nest_service("/mcp", mcp_service()));
    Ok(format!("http://127.0.0.1:{port}/mcp").parse()?)
}

/// Starts the full stack: the authorization server whose keys sign the tokens (its routes are
/// not served: tokens are minted here), ATAG with GitHub connected for [`WARM_SUBJECT`], and
/// the layers in front of the rmcp service. The authorization server and the endpoint.
async fn start_full_stack(policy: &ToolPolicy) -> Result<(AuthServer, String), Box<dyn Error>> {
    let (listener, port) = bind().await?;
    let issuer = format!("http://127.0.0.1:{port}");
    let resource_uri = format!("{issuer}/mcp");
    let auth = AuthServer::builder(&issuer)
        .resource(&resource_uri)
        .scopes_supported(policy.scopes().iter())
        .build()?;
    let resource = ProtectedResource::builder(&resource_uri)
        .authorization_server(auth.issuer())
        .scopes_supported([BASE_SCOPE])
        .build()?;
    let github = ExternalService::github("load-client-id", "load-client-secret");
    let atag = Atag::builder(&auth).service(github).build()?;
    let github_tokens = TokenSet {
        access_token: "gho_0123456789abcdefghijklmnopqrstuvwxyz".into(),
        refresh_token: None,
        expires_at: None,
        scopes: vec!["repo".into()],
    };
    let day = Duration::from_secs(24 * 3600);
    atag.vault()
        .put(WARM_SUBJECT, "github", &github_tokens, day)
        .await?;
    let bearer = BearerLayer::new(auth.validator(&resource_uri)?, resource.clone())
        .require_scopes([BASE_SCOPE]);
    let origin = OriginLayer::new(&resource).allow_loopback();
    let protected = ServiceBuilder::new()
        .layer(origin.clone())
        .layer(bearer.clone())
        .layer(policy.layer(&resource))
        .layer(atag.layer(policy)?)
        .service(mcp_service());
    let no_atag = ServiceBuilder::new()
        .layer(origin.clone())
        .layer(bearer.clone())
        .layer(policy.layer(&resource))
        .service(mcp_service());
    let bearer_only = ServiceBuilder::new()
        .layer(origin)
        .layer(bearer)
        .service(mcp_service());
    let app = Router::new()
        .nest_service("/mcp", protected)
        .nest_service(BEARER_ONLY_PATH, bearer_only)
        .nest_service(NO_ATAG_PATH, no_atag);
    serve(listener, app);
    Ok((auth, resource_uri))
}

/// A variant, shareable by its workers.
fn variant(
    name: &'static str,
    uri: &Uri,
    call: ToolCall,
    credentials: Credentials,
) -> Arc<Variant> {
    let uri = uri.clone();
    Arc::new(Variant {
        name,
        uri,
        call,
        credentials,
    })
}

/// Starts both servers, warms up, runs the rounds, prints the lines, the summary and the ratio.
#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let settings = match Settings::from_args() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let runtime = tokio::runtime::Handle::current();
    println!("CPUs: {cpus} (client and servers share them)");
    println!(
        "tokio runtime: {:?}, {} worker threads (the default: one per CPU)",
        runtime.runtime_flavor(),
        runtime.metrics().num_workers()
    );
    println!(
        "settings: {} rounds of {} s per variant, {} in flight, {} users x {} uses",
        settings.rounds, settings.seconds, settings.concurrency, settings.users, settings.uses
    );

    let bare_uri = start_no_auth().await?;
    let (auth, resource_uri) = start_full_stack(&policy()?).await?;
    let full_uri: Uri = resource_uri.parse()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
    let warm = bearer_header(&access_token(&auth, &resource_uri, WARM_SUBJECT)?)?;
    // The bare server gets the same token (and ignores it): the ratio then measures what the
    // stack does with the request, not the 600 bytes the client chose to send.
    let same_bytes = Credentials::Warm(warm.clone());
    let no_auth = variant(VARIANTS[0], &bare_uri, ToolCall::Echo, same_bytes);
    let warm_auth = Credentials::Warm(warm.clone());
    let warm_token = variant(VARIANTS[1], &full_uri, ToolCall::Echo, warm_auth);
    let bearer_only_uri: Uri = format!("{}{BEARER_ONLY_PATH}", auth.issuer()).parse()?;
    let bearer_auth = Credentials::Warm(warm.clone());
    let bearer_only = variant(VARIANTS[2], &bearer_only_uri, ToolCall::Echo, bearer_auth);
    let no_atag_uri: Uri = format!("{}{NO_ATAG_PATH}", auth.issuer()).parse()?;
    let no_atag_auth = Credentials::Warm(warm.clone());
    let no_atag = variant(VARIANTS[3], &no_atag_uri, ToolCall::Echo, no_atag_auth);
    let github_auth = Credentials::Warm(warm);
    let github = variant(VARIANTS[5], &full_uri, ToolCall::GithubWhoami, github_auth);

    // Warm-up: connections opened, the warm token cached, code paths hot.
    let warm_up = settings.duration().min(Duration::from_secs(1));
    for variant in [&no_auth, &warm_token, &bearer_only, &no_atag, &github] {
        run(&client, variant.clone(), settings.concurrency, warm_up).await?;
    }
    println!("warm-up done ({} s per variant)\n", warm_up.as_secs_f64());

    let mut results: [Vec<Measurement>; 6] = Default::default();
    for round in 1..=settings.rounds {
        // Fresh tokens every round, so each round's first uses are cold validations.
        let minting = Instant::now();
        let tokens = (0..settings.users)
            .map(|i| bearer_header(&access_token(&auth, &resource_uri, &format!("user-{i}"))?))
            .collect::<Result<Vec<_>, _>>()?;
        let minted_in = minting.elapsed();
        let uses = settings.uses;
        let many_auth = Credentials::Many { tokens, uses };
        let many_users = variant(VARIANTS[4], &full_uri, ToolCall::Echo, many_auth);
        let label = format!("round {round}/{}", settings.rounds);
        let variants = [
            &no_auth,
            &warm_token,
            &bearer_only,
            &no_atag,
            &many_users,
            &github,
        ];
        for (variant, results) in variants.into_iter().zip(&mut results) {
            let duration = settings.duration();
            let measurement = run(&client, variant.clone(), settings.concurrency, duration).await?;
            report(&label, variant.name, &measurement);
            results.push(measurement);
        }
        let cold = results[4]
            .last()
            .map_or(0, |m| m.requests.min(settings.users));
        println!(
            "{:<10} many users: {cold} cold first uses; {} tokens minted in {:.0} ms\n",
            "",
            settings.users,
            minted_in.as_secs_f64() * 1000.0
        );
    }

    println!("median over {} rounds:", settings.rounds);
    println!(
        "{:<32} {:>9} {:>11} {:>11} {:>13} {:>13}",
        "variant", "req/s", "p50 ms", "p99 ms", "vs no auth", "µs CPU/req"
    );
    for (name, rounds) in VARIANTS.iter().zip(&results) {
        let figure = |f: fn(&Measurement) -> f64| median(rounds.iter().map(f).collect());
        println!(
            "{name:<32} {:>9.0} {:>11.2} {:>11.2} {:>13.2} {:>13.1}",
            figure(|m| m.throughput),
            figure(|m| m.p50_ms),
            figure(|m| m.p99_ms),
            throughput_ratio(rounds, &results[0]),
            figure(|m| m.cpu_us)
        );
    }
    let ratio = throughput_ratio(&results[1], &results[0]);
    println!("\nfull stack / no auth throughput ratio: {ratio:.2}");
    Ok(())
}
