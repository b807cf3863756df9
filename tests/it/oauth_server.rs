//! A test authorization server: the authorization server and `/mcp` (an echo of the caller
//! behind the bearer layer, token cache on) on a loopback port, with the requests a client and
//! a browser make to it. Used by the revocation, replica and attack tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_mcp_auth::server::{AuthServer, AuthServerBuilder, SigningKeys};
use tower_mcp_auth::store::{MemoryStore, Store};
use tower_mcp_auth::{AuthContext, ProtectedResource};

use crate::code_flow::{VERIFIER, challenge, query};
use crate::support::*;

pub const REDIRECT: &str = "http://127.0.0.1:4567/callback";
pub const PASSWORD: &str = "wonderland";

/// How long a revocation made on one replica may take to reach another: the revocation
/// log's poll interval (1 s) plus a store round trip, with room for a loaded CI machine.
pub const PROPAGATION_BOUND: Duration = Duration::from_secs(3);

/// One replica: the authorization server and `/mcp` (an echo of the caller, behind the bearer
/// layer with its token cache on), served on its own port; all replicas share `issuer`.
pub struct Replica {
    pub base: String,
    pub mcp: String,
    /// The resource URI (the issuer's `/mcp`, whichever replica serves it).
    pub resource: String,
    /// Calls that reached the protected service.
    pub served: Arc<AtomicUsize>,
}

pub async fn replica(
    listener: tokio::net::TcpListener,
    issuer: &str,
    store: impl Store,
    keys: SigningKeys,
) -> Replica {
    replica_with(listener, issuer, store, keys, |b| b).await
}

/// [`replica`], its authorization server configured further by `configure`.
pub async fn replica_with(
    listener: tokio::net::TcpListener,
    issuer: &str,
    store: impl Store,
    keys: SigningKeys,
    configure: impl FnOnce(AuthServerBuilder) -> AuthServerBuilder,
) -> Replica {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mcp = format!("{issuer}/mcp");
    let auth = configure(
        AuthServer::builder(issuer)
            .resource(&mcp)
            .scopes_supported(["mcp:tools"])
            .dev_user("alice", PASSWORD)
            .signing_keys(keys)
            .store(store),
    )
    .build()
    .unwrap();
    let resource = ProtectedResource::builder(&mcp)
        .authorization_server(auth.issuer())
        .build()
        .unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let echo = tower::service_fn(move |req: http::Request<axum::body::Body>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let sub = req
                .extensions()
                .get::<AuthContext>()
                .map(|c| c.subject().to_owned());
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(json!({ "sub": sub }).to_string()),
            )))
        }
    });
    let app = axum::Router::new()
        .nest_service(
            "/mcp",
            ServiceBuilder::new()
                .layer(auth.bearer_layer(&resource).unwrap())
                .service(echo),
        )
        .merge(auth.router());
    spawn_with_peer(listener, app);
    Replica {
        mcp: format!("{base}/mcp"),
        base,
        resource: mcp,
        served,
    }
}

impl Replica {
    pub async fn register(&self) -> String {
        let response = client()
            .post(format!("{}/oauth/register", self.base))
            .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "registered");
        response.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A browser signs in and consents here; returns the authorization code.
    pub async fn code(&self, browser: &reqwest::Client, client_id: &str, resource: &str) -> String {
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", self.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("code_challenge", &challenge(VERIFIER))
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "s")
            .append_pair("resource", resource)
            .append_pair("scope", "mcp:tools");
        let page = browser.get(url.as_str()).send().await.unwrap();
        let back = if page.status() == 303 {
            page
        } else {
            assert_eq!(page.status(), 200, "the login page");
            let html = page.text().await.unwrap();
            sign_in_and_approve(browser, &self.base, &html, "alice", PASSWORD).await
        };
        query(back.headers()["location"].to_str().unwrap())["code"].clone()
    }

    pub async fn token(&self, http: &reqwest::Client, form: &[(&str, &str)]) -> reqwest::Response {
        http.post(format!("{}/oauth/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn redeem(
        &self,
        http: &reqwest::Client,
        client_id: &str,
        code: &str,
    ) -> reqwest::Response {
        self.token(
            http,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
    }

    pub async fn refresh(&self, client_id: &str, refresh_token: &str) -> reqwest::Response {
        self.token(
            &client(),
            &[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    pub async fn revoke(&self, client_id: &str, token: &str) -> reqwest::StatusCode {
        client()
            .post(format!("{}/oauth/revoke", self.base))
            .form(&[("client_id", client_id), ("token", token)])
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn call(&self, access_token: &str) -> reqwest::Response {
        client()
            .post(&self.mcp)
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    pub async fn status(&self, access_token: &str) -> u16 {
        self.call(access_token).await.status().as_u16()
    }

    /// Waits (up to [`PROPAGATION_BOUND`]) until `/mcp` refuses `access_token` with 401
    /// `invalid_token`; returns how long that took.
    pub async fn refused_within_bound(&self, access_token: &str) -> Duration {
        let started = Instant::now();
        loop {
            let response = self.call(access_token).await;
            if response.status() == 401 {
                assert!(
                    www_authenticate(&response).contains("error=\"invalid_token\""),
                    "a revoked token is an invalid_token"
                );
                return started.elapsed();
            }
            assert_eq!(response.status(), 200, "only served or refused");
            assert!(
                started.elapsed() < PROPAGATION_BOUND,
                "still accepted after {PROPAGATION_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn tokens_of(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), 200, "tokens issued");
    let body: Value = response.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// One replica on the memory store, its bearer cache on (the default).
pub async fn single() -> Replica {
    single_with(|b| b).await
}

/// [`single`], its authorization server configured further by `configure`.
pub async fn single_with(
    configure: impl FnOnce(AuthServerBuilder) -> AuthServerBuilder,
) -> Replica {
    let (listener, addr) = listener().await;
    let issuer = format!("http://{addr}");
    replica_with(
        listener,
        &issuer,
        MemoryStore::default(),
        SigningKeys::generate().unwrap(),
        configure,
    )
    .await
}
