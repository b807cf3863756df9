//! [`PolicyHandle`]: a policy replaced while serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::compiled::ToolPolicy;
use super::layer::ToolPolicyLayer;
use super::rules::PolicyConfig;
use crate::{ConfigError, ProtectedResource, audit};

/// A [`ToolPolicy`] that can be replaced atomically while requests are served: every request
/// is judged by one whole policy, the one current when it arrived, never a mix. Layers made
/// with [`PolicyHandle::layer`] follow it.
///
/// A policy file is read with [`reload_from`](Self::reload_from) (TOML, or JSON by the `.json`
/// extension; the format of [`PolicyConfig`]), or watched with [`watch`](Self::watch). A file
/// that does not parse or compile is refused and the current policy keeps serving, with an
/// error in the log.
///
/// The third-party services a policy names (ATAG) are read once, when the ATAG layer is built:
/// a reload may change scopes, rules, denials and group mappings freely, but a new
/// `needs_service` takes a restart.
///
/// ```
/// use tower_mcp_auth::policy::{PolicyHandle, ToolPolicy};
///
/// let handle = PolicyHandle::new(ToolPolicy::builder().default_scopes(["mcp:tools"]).build().unwrap());
/// // … serve `handle.layer(&resource)` …
/// handle.replace(ToolPolicy::builder().default_scopes(["mcp:tools"]).deny_tool("shutdown").build().unwrap());
/// ```
#[derive(Debug, Clone)]
pub struct PolicyHandle(Arc<ArcSwap<ToolPolicy>>);

impl PolicyHandle {
    /// A handle serving `policy` until it is replaced.
    pub fn new(policy: ToolPolicy) -> Self {
        PolicyHandle(Arc::new(ArcSwap::from_pointee(policy)))
    }

    /// The policy requests are judged by now.
    pub fn current(&self) -> ToolPolicy {
        ToolPolicy::clone(&self.0.load())
    }

    /// Serves `policy` from the next request on; returns the one it replaces.
    pub fn replace(&self, policy: ToolPolicy) -> ToolPolicy {
        if self.0.load().services_are_served() {
            // The ATAG layer was built from the old value: it serves the new one's tools too.
            policy.serve_services();
        }
        let old = self.0.swap(Arc::new(policy));
        tracing::info!(target: audit::TARGET, "tool policy replaced");
        ToolPolicy::clone(&old)
    }

    /// The policy layer judging by this handle's current policy.
    pub fn layer(&self, resource: &ProtectedResource) -> ToolPolicyLayer {
        ToolPolicyLayer::reloadable(self.clone(), resource.clone())
    }

    /// Reads, compiles and serves the policy file at `path`. On any error the current policy
    /// stays, and the error says why (it is logged too).
    pub fn reload_from(&self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let path = path.as_ref();
        match read_policy(path) {
            Ok(policy) => {
                self.replace(policy);
                tracing::info!(target: audit::TARGET, file = %path.display(), "tool policy reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(target: audit::TARGET, file = %path.display(), error = %e, "tool policy file refused; the previous policy keeps serving");
                Err(e)
            }
        }
    }

    /// Checks `path` every `every` and reloads it when its modification time or size changed
    /// (a broken version is refused and retried at its next change). Runs until the returned
    /// task is aborted.
    pub fn watch(&self, path: impl Into<PathBuf>, every: Duration) -> tokio::task::JoinHandle<()> {
        let (handle, path) = (self.clone(), path.into());
        // Taken now, not when the task first runs: a change made right after `watch` returns
        // must count as a change.
        let mut seen = stamp(&path);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = stamp(&path);
                if now != seen {
                    seen = now;
                    // The outcome is logged by `reload_from`.
                    let _ = handle.reload_from(&path);
                }
            }
        })
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_policy(path: &Path) -> Result<ToolPolicy, ConfigError> {
    let invalid =
        |e: &dyn std::fmt::Display| ConfigError::InvalidPolicy(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| invalid(&e))?;
    let config: PolicyConfig = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| invalid(&e))?
    } else {
        toml::from_str(&text).map_err(|e| invalid(&e))?
    };
    ToolPolicy::from_config(config)
}
