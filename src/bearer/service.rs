use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::admission::Admission;
use super::credentials::{Scheme, check_syntax, token_in};
use super::future::ResponseFuture;
use super::{BearerLayer, ResponseBody};
use crate::AuthContext;
use crate::validate::TokenValidator;

/// Middleware that admits only requests with a valid bearer token; see the
/// [module docs](crate::bearer).
#[derive(Debug)]
pub struct BearerService<S, V> {
    pub(crate) inner: S,
    pub(crate) validator: Arc<V>,
    pub(crate) admission: Arc<Admission>,
}

impl<S: Clone, V> Clone for BearerService<S, V> {
    fn clone(&self) -> Self {
        BearerService {
            inner: self.inner.clone(),
            validator: self.validator.clone(),
            admission: self.admission.clone(),
        }
    }
}

impl<S, V: TokenValidator> BearerService<S, V> {
    /// Wraps `inner`; the same as applying `BearerLayer::new(validator, resource)`.
    pub fn new(inner: S, validator: V, resource: crate::ProtectedResource) -> Self {
        tower_layer::Layer::layer(&BearerLayer::new(validator, resource), inner)
    }
}

impl<S, V> BearerService<S, V> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, V, ReqBody, ResBody> Service<Request<ReqBody>> for BearerService<S, V>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    V: TokenValidator,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (scheme, token) = match token_in(
            request.headers(),
            &self.admission.token_header,
            request.uri(),
        ) {
            Ok(found) => found,
            Err(e) => return ResponseFuture::refused(self.admission.refuse_credentials(e)),
        };
        // A DPoP-presented token needs its proof, checked on every request (a proof is
        // single-use); the token itself may still come from the cache.
        let proven: Option<Box<str>> = match scheme {
            Scheme::Bearer => None,
            Scheme::Dpop => {
                // A proof costs a signature check too: a refused one uses the address's
                // failure budget like a refused token.
                #[cfg(feature = "rate-limit")]
                let unit = match &self.admission.failures {
                    Some(budgets) => match budgets.take(budgets.address_of_request(&request)) {
                        Ok(unit) => Some(unit),
                        Err(wait) => {
                            return ResponseFuture::refused(self.admission.refuse_failures(wait));
                        }
                    },
                    None => None,
                };
                let proven = self.admission.prove(&request, token);
                // A nonce challenge or a full replay cache is no failed authentication.
                #[cfg(feature = "rate-limit")]
                if let Some(unit) = unit {
                    unit.settle(matches!(
                        proven,
                        Err(crate::dpop::DpopError::InvalidProof(_))
                    ));
                }
                match proven {
                    Ok(jkt) => Some(jkt),
                    Err(e) => return ResponseFuture::refused(*self.admission.refuse_proof(&e)),
                }
            }
        };
        let mac = match &self.admission.cache {
            Some(cache) => {
                let mac = cache.mac(token);
                let cached = cache.get(mac);
                if cached.is_some() {
                    crate::metrics::count!(crate::metrics::TOKEN_CACHE, "result" => "hit");
                } else {
                    crate::metrics::count!(crate::metrics::TOKEN_CACHE, "result" => "miss");
                }
                if let Some(ctx) = cached {
                    // Hot path: no signature work, no syntax scan (the cached token passed it);
                    // a revocation since is a local lookup.
                    if !self.validator.revoked(&ctx) {
                        if let Err(refusal) = self.admission.check_binding(&ctx, proven.as_deref())
                        {
                            return ResponseFuture::refused(*refusal);
                        }
                        return admit(&self.admission, ctx, request, &mut self.inner);
                    }
                    // Validated again below, which refuses it with the validator's answer.
                    cache.remove(mac);
                }
                Some(mac)
            }
            None => None,
        };
        let token = match check_syntax(token) {
            Ok(token) => token,
            Err(e) => return ResponseFuture::refused(self.admission.refuse_credentials(e)),
        };
        let validator = self.validator.clone();
        let admission = self.admission.clone();
        let token: Box<str> = Box::from(token);
        // A validation is about to cost a signature check or a call: the address must have
        // budget for it (taken now, so concurrent requests cannot overshoot).
        #[cfg(feature = "rate-limit")]
        let (request, unit) = match &self.admission.failures {
            Some(budgets) => {
                let (parts, body) = request.into_parts();
                let address = budgets.address_of(&parts);
                match budgets.take(address) {
                    Ok(unit) => (Request::from_parts(parts, body), Some(unit)),
                    Err(wait) => {
                        return ResponseFuture::refused(self.admission.refuse_failures(wait));
                    }
                }
            }
            None => (request, None),
        };
        let validation = Box::pin(async move {
            let started = std::time::Instant::now();
            let result = match (&admission.cache, mac) {
                (Some(cache), Some(mac)) => cache.validate_once(mac, &token, &*validator).await,
                _ => validator.validate(&token).await,
            };
            let outcome = match &result {
                Ok(_) => "valid",
                Err(crate::validate::TokenError::Unavailable(_)) => "unavailable",
                Err(_) => "invalid",
            };
            crate::metrics::validation(outcome, started.elapsed().as_secs_f64());
            #[cfg(feature = "rate-limit")]
            if let Some(unit) = unit {
                unit.settle(outcome == "invalid");
            }
            result
        });
        // The service that was polled ready goes into the future; a clone stays here.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::validating(validation, request, inner, self.admission.clone(), proven)
    }
}

/// Runs the checks that need an [`AuthContext`], then the inner service.
pub(crate) fn admit<S, ReqBody, ResBody>(
    admission: &Arc<Admission>,
    ctx: AuthContext,
    mut request: Request<ReqBody>,
    inner: &mut S,
) -> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    match admission.admit(&ctx, &request) {
        Err(refusal) => ResponseFuture::refused(*refusal),
        Ok(action) => {
            crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "bearer", "decision" => "allowed", "reason" => "");
            let extensions = request.extensions_mut();
            extensions.insert(ctx);
            if !admission.required_scopes.scopes().is_empty() {
                extensions.insert(admission.required_scopes.clone());
            }
            ResponseFuture::calling(inner.call(request), action, admission.clone())
        }
    }
}
