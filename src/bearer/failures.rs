//! [`AuthFailureLimit`]: how many failed token validations one client address may cause,
//! enforced before the signature work.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::request::Parts;

use crate::address::{ClientAddress, PeerAddress};

/// Addresses tracked at once by default; past it the least recently seen are forgotten.
pub const DEFAULT_TRACKED_ADDRESSES: u64 = 100_000;

/// Limits the failed authentications one client address may cause: past the limit, a token the
/// bearer layer has not validated before is refused with `429` and `Retry-After` *before* any
/// signature check, introspection call or key fetch, so a flood of bad tokens costs at most the
/// configured number of verifications per period, however many tokens it holds.
///
/// - Each uncached validation from an address takes one unit of that address's budget (a
///   token bucket, as GCRA) before it starts, so concurrent requests cannot overshoot it. A validation that succeeds, or that fails because the identity provider is
///   unavailable, gives its unit back: only refused tokens use the budget up.
/// - Requests with tokens already in the bearer layer's cache never touch the budget: users
///   signed in before an attack keep working while their address (a shared NAT, say) is
///   locked out of new validations.
/// - The address comes from a [`ClientAddress`] ([`PeerAddress`] by default, which needs
///   axum's `ConnectInfo`; [`TrustedProxies`](crate::address::TrustedProxies) behind a
///   reverse proxy). Requests whose address cannot be told share one budget.
/// - At most [`DEFAULT_TRACKED_ADDRESSES`] addresses are tracked (least recently seen
///   forgotten), so memory stays bounded however many addresses appear.
///
/// ```
/// use std::time::Duration;
/// use tower_mcp_auth::bearer::AuthFailureLimit;
///
/// // 20 refused tokens per address per minute, in a burst or spread out.
/// let limit = AuthFailureLimit::new(20, Duration::from_secs(60));
/// # let _ = limit;
/// ```
#[derive(Clone)]
#[must_use]
pub struct AuthFailureLimit {
    limit: Option<(u32, Duration)>,
    address: Arc<dyn ClientAddress>,
    tracked: u64,
}

impl std::fmt::Debug for AuthFailureLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFailureLimit")
            .field("limit", &self.limit)
            .field("tracked", &self.tracked)
            .finish_non_exhaustive()
    }
}

impl AuthFailureLimit {
    /// Each address may cause `failures` refused validations per `period`. Zero failures or a
    /// zero period leave the limit off.
    pub fn new(failures: u32, period: Duration) -> Self {
        AuthFailureLimit {
            limit: (failures > 0 && !period.is_zero()).then_some((failures, period)),
            address: Arc::new(PeerAddress),
            tracked: DEFAULT_TRACKED_ADDRESSES,
        }
    }

    /// How the client's address is found (default [`PeerAddress`]).
    pub fn client_address(mut self, address: impl ClientAddress) -> Self {
        self.address = Arc::new(address);
        self
    }

    /// How many addresses are tracked at once (default [`DEFAULT_TRACKED_ADDRESSES`]).
    pub fn max_tracked(mut self, addresses: u64) -> Self {
        self.tracked = addresses.max(1);
        self
    }

    pub(crate) fn build(self) -> Option<FailureBudgets> {
        let (failures, period) = self.limit?;
        let interval = u64::try_from((period / failures).as_nanos().max(1)).unwrap_or(u64::MAX);
        let tolerance = interval.saturating_mul(u64::from(failures));
        Some(FailureBudgets {
            interval,
            tolerance,
            origin: Instant::now(),
            address: self.address,
            budgets: moka::sync::Cache::builder()
                .max_capacity(self.tracked)
                // A budget idle this long is full again anyway: forgetting it changes nothing.
                .time_to_idle(Duration::from_nanos(tolerance).max(Duration::from_secs(1)))
                .build(),
        })
    }
}

/// The budgets of the addresses seen.
#[derive(Clone)]
pub(crate) struct FailureBudgets {
    /// Time between two units coming back.
    interval: u64,
    /// How far ahead of now an address's schedule may run: `burst` units.
    tolerance: u64,
    /// The clock's origin: budgets hold nanoseconds since it.
    origin: Instant,
    address: Arc<dyn ClientAddress>,
    budgets: moka::sync::Cache<Option<IpAddr>, Arc<Budget>>,
}

impl std::fmt::Debug for FailureBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureBudgets")
            .field("interval_nanos", &self.interval)
            .field("tolerance_nanos", &self.tolerance)
            .finish_non_exhaustive()
    }
}

/// One address's budget as a GCRA schedule (the algorithm `governor` implements): the
/// theoretical time, in nanoseconds since the origin, at which the next unit is free. It is
/// kept here rather than in a `governor` limiter because a unit must be *given back* when the
/// validation it was taken for succeeds, and `governor` cannot return cells.
#[derive(Debug, Default)]
struct Budget {
    next_free: AtomicU64,
}

/// A unit of an address's budget, taken for one validation.
#[derive(Debug)]
pub(crate) struct Unit {
    budget: Arc<Budget>,
    interval: u64,
}

impl Unit {
    /// The validation is over: a refused token keeps the unit spent, anything else gives it
    /// back (the schedule moves back by one interval).
    pub(crate) fn settle(self, refused: bool) {
        if refused {
            return;
        }
        let interval = self.interval;
        let _ = self
            .budget
            .next_free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(interval))
            });
    }
}

impl FailureBudgets {
    /// The address the request comes from; an IPv6 client by its /64, the block one
    /// subscriber gets (counting single addresses would let it rotate through 2^64 of them).
    pub(crate) fn address_of(&self, parts: &Parts) -> Option<IpAddr> {
        self.address
            .client_address(parts)
            .map(|ip| match ip.to_canonical() {
                IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
                    v6.to_bits() & !u128::from(u64::MAX),
                )),
                v4 => v4,
            })
    }

    /// The address a request comes from, without taking it apart: the extractor reads the
    /// headers and extensions only.
    pub(crate) fn address_of_request<B>(&self, request: &http::Request<B>) -> Option<IpAddr> {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = request.method().clone();
        parts.uri = request.uri().clone();
        parts.headers = request.headers().clone();
        if let Some(peer) = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        {
            parts.extensions.insert(*peer);
        }
        self.address_of(&parts)
    }

    /// Takes a unit of `address`'s budget, or says how long until one is free.
    pub(crate) fn take(&self, address: Option<IpAddr>) -> Result<Unit, Duration> {
        let budget = self.budgets.get_with(address, Arc::default);
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (interval, tolerance) = (self.interval, self.tolerance);
        let mut wait = 0;
        let taken =
            budget
                .next_free
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next_free| {
                    let after = next_free.max(now).saturating_add(interval);
                    if after - now > tolerance {
                        wait = after - now - tolerance;
                        None
                    } else {
                        Some(after)
                    }
                });
        match taken {
            Ok(_) => Ok(Unit { budget, interval }),
            Err(_) => Err(Duration::from_nanos(wait)),
        }
    }
}
