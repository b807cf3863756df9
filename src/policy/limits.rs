//! [`RateLimits`]: how many tool calls a subject, a client, or a subject on one tool may make.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::AuthContext;
use crate::jsonrpc::McpRequest;

/// Principals tracked at once by default; past it the least recently seen are forgotten (their
/// budget starts again), so memory stays bounded however many principals appear.
pub const DEFAULT_TRACKED: u64 = 100_000;

/// Limits on `tools/call` per principal, enforced by the policy layer after the policy allowed
/// the call: past a limit the caller gets HTTP 429 with `Retry-After` and a JSON-RPC error, and
/// other principals are not affected. Each limit is a token bucket (the `governor` crate):
/// `calls` per `period`, in a burst or spread out.
///
/// ```
/// use std::time::Duration;
/// use tower_mcp_auth::policy::RateLimits;
///
/// let limits = RateLimits::new()
///     .per_subject(120, Duration::from_secs(60))
///     .per_client(1_000, Duration::from_secs(60))
///     .per_tool("send_email", 5, Duration::from_secs(60));
/// # let _ = limits;
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct RateLimits {
    per_subject: Option<Quota>,
    per_client: Option<Quota>,
    per_tool: Vec<(String, Quota)>,
    tracked: Option<u64>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_subject", &self.per_subject)
            .field("per_client", &self.per_client)
            .field("per_tool", &self.per_tool)
            .finish_non_exhaustive()
    }
}

fn quota(calls: u32, period: Duration) -> Option<Quota> {
    let calls = NonZeroU32::new(calls)?;
    Quota::with_period(period.checked_div(calls.get())?).map(|q| q.allow_burst(calls))
}

impl RateLimits {
    /// No limits yet.
    pub fn new() -> Self {
        RateLimits::default()
    }

    /// Each subject (issuer and `sub`) may make `calls` tool calls per `period`. Zero calls or
    /// a zero period leave the limit off.
    pub fn per_subject(mut self, calls: u32, period: Duration) -> Self {
        self.per_subject = quota(calls, period);
        self
    }

    /// Each client (`client_id`) may make `calls` tool calls per `period`, all its users
    /// together.
    pub fn per_client(mut self, calls: u32, period: Duration) -> Self {
        self.per_client = quota(calls, period);
        self
    }

    /// Each subject may call the tool `name` (exactly) `calls` times per `period`.
    pub fn per_tool(mut self, name: impl Into<String>, calls: u32, period: Duration) -> Self {
        if let Some(quota) = quota(calls, period) {
            self.per_tool.push((name.into(), quota));
        }
        self
    }

    /// How many principals are tracked at once (default [`DEFAULT_TRACKED`]).
    pub fn max_tracked(mut self, principals: u64) -> Self {
        self.tracked = Some(principals);
        self
    }

    pub(super) fn build(self) -> Option<Arc<Limiter>> {
        if self.per_subject.is_none() && self.per_client.is_none() && self.per_tool.is_empty() {
            return None;
        }
        let mut key = [0u8; 16];
        // Without randomness the buckets are keyed by a fixed key: still per principal, only
        // an attacker who knows the key could aim two principals at one bucket.
        let _ = getrandom::fill(&mut key);
        let buckets = moka::sync::Cache::builder()
            .max_capacity(self.tracked.unwrap_or(DEFAULT_TRACKED))
            // A bucket idle this long is full again anyway: forgetting it changes nothing.
            .time_to_idle(Duration::from_secs(3600))
            .build();
        Some(Arc::new(Limiter {
            limits: self,
            buckets,
            key,
        }))
    }
}

/// The compiled limits and their buckets.
pub(super) struct Limiter {
    limits: RateLimits,
    /// Buckets by a keyed 128-bit hash of what they count (kind, principal, tool): no key
    /// string is built or stored per call.
    buckets: moka::sync::Cache<u128, Arc<DefaultDirectRateLimiter>>,
    key: [u8; 16],
}

/// What a bucket counts.
#[derive(Clone, Copy)]
enum Bucket<'a> {
    Subject(&'a AuthContext),
    Client(&'a str),
    Tool(&'a str, &'a AuthContext),
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    fn id(&self, bucket: Bucket<'_>) -> u128 {
        use std::hash::Hasher;
        let mut hasher = SipHasher13::new_with_key(&self.key);
        // Length-prefixed parts: no two different buckets feed the hasher the same bytes.
        let mut part = |tag: u8, text: &str| {
            hasher.write(&[tag]);
            hasher.write(&(text.len() as u64).to_le_bytes());
            hasher.write(text.as_bytes());
        };
        match bucket {
            Bucket::Subject(ctx) => {
                part(b's', ctx.issuer().unwrap_or(""));
                part(b's', ctx.subject());
            }
            Bucket::Client(client) => part(b'c', client),
            Bucket::Tool(tool, ctx) => {
                part(b't', tool);
                part(b't', ctx.issuer().unwrap_or(""));
                part(b't', ctx.subject());
            }
        }
        hasher.finish128().as_u128()
    }

    fn take(&self, bucket: Bucket<'_>, quota: Quota) -> Result<(), Duration> {
        let bucket = self.buckets.get_with(self.id(bucket), || {
            Arc::new(governor::RateLimiter::direct(quota))
        });
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Takes one call from each bucket the `tools/call` messages of `request` draw on; the
    /// longest wait when one is empty.
    pub(super) fn check(&self, request: &McpRequest, ctx: &AuthContext) -> Result<(), Duration> {
        for message in &request.messages {
            if message.method.as_deref() != Some("tools/call") {
                continue;
            }
            if let Some(quota) = self.limits.per_subject {
                self.take(Bucket::Subject(ctx), quota)?;
            }
            if let (Some(quota), Some(client)) = (self.limits.per_client, ctx.client_id()) {
                self.take(Bucket::Client(client), quota)?;
            }
            let tool = message.name.as_deref().unwrap_or("");
            for (name, quota) in &self.limits.per_tool {
                // Case folded, as the policy judges names: `Send_Email` is `send_email`'s budget.
                if name.eq_ignore_ascii_case(tool) {
                    self.take(Bucket::Tool(name, ctx), *quota)?;
                }
            }
        }
        Ok(())
    }
}
