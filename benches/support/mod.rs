//! What the layer benches share: polling a future that completes at once, and timing a service
//! over requests built outside the timing.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tower::Service;

/// Polls a future that completes without waiting (static-key validation, the inner services of
/// the benches), so the figures hold no executor overhead.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("benchmarked future is not immediately ready"),
    }
}

/// Times `iters` calls of `service`, each on a request from `request`. Requests are built in
/// small batches outside the timing: a batch stays in the CPU cache, and no run allocates (and
/// page-faults) millions of requests up front. Dropping the responses is timed, as in a server.
pub fn per_request<S, R>(service: &mut S, mut request: impl FnMut() -> R, iters: u64) -> Duration
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(256);
        let requests: Vec<R> = (0..batch).map(|_| request()).collect();
        let start = Instant::now();
        for req in requests {
            black_box(ready(service.call(req)).unwrap());
        }
        total += start.elapsed();
        left -= batch;
    }
    total
}
