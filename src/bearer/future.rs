use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::ResponseBody;
use super::admission::{Admission, SessionAction};
use super::service::admit;
use crate::AuthContext;
use crate::BoxFuture;
use crate::validate::TokenError;

pin_project! {
    /// Response future of [`BearerService`](super::BearerService).
    ///
    /// No boxing on the cached path: a refusal is a ready response, an admitted request is the
    /// inner service's own future. Only a token-cache miss awaits the (boxed) validation.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F> {
        Validating {
            validation: BoxFuture<'static, Result<AuthContext, TokenError>>,
            request: Option<Request<B>>,
            inner: S,
            admission: Arc<Admission>,
            // The thumbprint of a DPoP proof's key, when the token came with one.
            proven: Option<Box<str>>,
        },
        Calling {
            #[pin]
            future: F,
            action: Option<SessionAction>,
            admission: Arc<Admission>,
        },
        Refused {
            response: Option<Response<Full<Bytes>>>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn refused(response: Response<Full<Bytes>>) -> Self {
        ResponseFuture {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    pub(crate) fn calling(
        future: S::Future,
        action: SessionAction,
        admission: Arc<Admission>,
    ) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                action: Some(action),
                admission,
            },
        }
    }

    pub(crate) fn validating(
        validation: BoxFuture<'static, Result<AuthContext, TokenError>>,
        request: Request<B>,
        inner: S,
        admission: Arc<Admission>,
        proven: Option<Box<str>>,
    ) -> Self {
        ResponseFuture {
            state: State::Validating {
                validation,
                request: Some(request),
                inner,
                admission,
                proven,
            },
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "bearer ResponseFuture polled after completion";

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Validating {
                    validation,
                    request,
                    inner,
                    admission,
                    proven,
                } => {
                    let result = ready!(validation.as_mut().poll(cx));
                    let request = request.take().expect(POLLED_AFTER_COMPLETION);
                    let next = match result {
                        // Cached by the validation itself, once for all who waited on it.
                        Ok(ctx) => match admission.check_binding(&ctx, proven.as_deref()) {
                            Ok(()) => admit(admission, ctx, request, inner),
                            Err(refusal) => ResponseFuture::refused(*refusal),
                        },
                        Err(e) => ResponseFuture::refused(admission.refuse_token(&e)),
                    };
                    state.set(next.state);
                }
                StateProj::Calling {
                    future,
                    action,
                    admission,
                } => {
                    let response = ready!(future.poll(cx))?;
                    if let Some(action) = action.take() {
                        admission.after_response(action, &response);
                    }
                    return Poll::Ready(Ok(response.map(Either::Left)));
                }
                StateProj::Refused { response } => {
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(Ok(response.map(Either::Right)));
                }
            }
        }
    }
}
