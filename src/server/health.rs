//! `GET /healthz` and `GET /readyz` for the authorization server (and the gateway around it).

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use serde_json::json;

use super::AuthServer;
use crate::audit;

/// How long each readiness check may take before it counts as failed.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// What [`AuthServer::readiness`] found: each check is `ok`, `unavailable` or `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Readiness {
    /// The store (a read of one key).
    pub store: &'static str,
    /// Each upstream identity provider, by id, in configuration order (its discovery
    /// document, or whatever its [`check_ready`](super::IdentityProvider::check_ready) asks).
    pub identity_providers: Vec<(String, &'static str)>,
}

impl Readiness {
    /// Whether every check passed.
    pub fn is_ready(&self) -> bool {
        self.store == "ok" && self.identity_providers.iter().all(|(_, s)| *s == "ok")
    }
}

async fn bounded<E: std::fmt::Display>(
    what: &str,
    check: impl Future<Output = Result<(), E>>,
) -> &'static str {
    match tokio::time::timeout(READINESS_TIMEOUT, check).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(target: audit::TARGET, check = what, error = %audit::Escaped(&e), "readiness: unavailable");
            "unavailable"
        }
        Err(_) => {
            tracing::warn!(target: audit::TARGET, check = what, "readiness: no answer in time");
            "timeout"
        }
    }
}

impl AuthServer {
    /// Checks what serving depends on, concurrently and each within [`READINESS_TIMEOUT`]:
    /// the store answers, and every upstream identity provider's metadata can be fetched.
    /// Reasons for a failure go to the log.
    pub async fn readiness(&self) -> Readiness {
        let store = self.store().clone();
        let store_check = bounded("store", async move {
            store.get("health:readiness").await.map(|_| ())
        });
        let mut provider_checks = tokio::task::JoinSet::new();
        for (index, provider) in self.identity_providers().iter().enumerate() {
            let provider = provider.clone();
            provider_checks.spawn(async move {
                let id = provider.id().to_owned();
                let state = bounded(&id, provider.check_ready()).await;
                (index, id, state)
            });
        }
        let store = store_check.await;
        let mut providers = provider_checks.join_all().await;
        providers.sort_by_key(|(index, _, _)| *index);
        Readiness {
            store,
            identity_providers: providers
                .into_iter()
                .map(|(_, id, state)| (id, state))
                .collect(),
        }
    }

    /// `GET /healthz` (200 while the process answers) and `GET /readyz` (200 when
    /// [`readiness`](Self::readiness) passes, 503 otherwise; the body names each check's state,
    /// never its reason), under the issuer's path. For load balancers and orchestrators; merge
    /// it beside [`router`](Self::router).
    ///
    /// ```
    /// # use tower_mcp_auth::server::AuthServer;
    /// let auth = AuthServer::builder("https://mcp.example.com")
    ///     .resource("https://mcp.example.com/mcp")
    ///     .build()
    ///     .unwrap();
    /// let app: axum::Router = auth.router().merge(auth.health_router());
    /// # let _ = app;
    /// ```
    pub fn health_router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let urls = self.urls();
        axum::Router::new()
            .route(
                &urls.local_path("/healthz"),
                get(|| async { axum::Json(json!({"status": "ok"})) }),
            )
            .route(&urls.local_path("/readyz"), get(readyz))
            .with_state(self.clone())
    }
}

async fn readyz(State(auth): State<AuthServer>) -> Response {
    let readiness = auth.readiness().await;
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let providers: serde_json::Map<String, serde_json::Value> = readiness
        .identity_providers
        .iter()
        .map(|(id, state)| (id.clone(), json!(state)))
        .collect();
    let mut response = (
        status,
        axum::Json(json!({
            "ready": readiness.is_ready(),
            "checks": { "store": readiness.store, "identity_providers": providers },
        })),
    )
        .into_response();
    super::no_store(response.headers_mut());
    response
}
