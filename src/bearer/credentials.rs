//! Reading the bearer credential from a request (RFC 6750 §2), strictly.

use http::header::AUTHORIZATION;
use http::{HeaderMap, Uri};

/// Why no token could be taken from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredentialError {
    /// No bearer credential at all (no header, another scheme, or a token only in the query,
    /// which we do not accept): the client is asked to authenticate.
    Missing,
    /// A malformed request (RFC 6750 §3.1 `invalid_request`, answered 400).
    Invalid(&'static str),
}

/// Takes the token from the one `Authorization: Bearer` header.
///
/// - exactly one `Authorization` header, else `invalid_request`;
/// - scheme `Bearer`, case-insensitively (RFC 7235 §2.1); another scheme counts as no token;
/// - the token must be an RFC 6750 `b64token`, nothing after it;
/// - a token in the query (`access_token=`) is never read: alone, the request counts as
///   unauthenticated; beside a header, it is two methods at once, `invalid_request`.
pub(crate) fn bearer_token<'a>(
    headers: &'a HeaderMap,
    uri: &Uri,
) -> Result<&'a str, CredentialError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(CredentialError::Invalid(
            "more than one Authorization header",
        ));
    }
    let in_query = uri.query().is_some_and(query_has_access_token);
    let Some(value) = first else {
        return Err(CredentialError::Missing);
    };
    if in_query {
        return Err(CredentialError::Invalid(
            "the access token must be sent only in the Authorization header, not also in the query",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| CredentialError::Invalid("the Authorization header is not ASCII"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(CredentialError::Missing);
    }
    let token = rest.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err(CredentialError::Invalid("the bearer token is malformed"));
    }
    Ok(token)
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

fn query_has_access_token(query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "access_token")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[&str], uri: &str) -> (HeaderMap, Uri) {
        let mut b = http::Request::builder().uri(uri);
        for h in headers {
            b = b.header(AUTHORIZATION, *h);
        }
        let p = b.body(()).unwrap().into_parts().0;
        (p.headers, p.uri)
    }

    fn bearer_token(p: &(HeaderMap, Uri)) -> Result<&str, CredentialError> {
        super::bearer_token(&p.0, &p.1)
    }

    #[test]
    fn parsing() {
        assert_eq!(
            bearer_token(&parts(&["Bearer abc.def-_~+/=="], "/")),
            Ok("abc.def-_~+/==")
        );
        assert_eq!(bearer_token(&parts(&["bEaReR   abc"], "/")), Ok("abc"));
        assert_eq!(
            bearer_token(&parts(&[], "/")),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            bearer_token(&parts(&["Basic YTpi"], "/")),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            bearer_token(&parts(&[], "/?access_token=x")),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            bearer_token(&parts(&[], "/?access%5Ftoken=x")),
            Err(CredentialError::Missing)
        );
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a\"b",
            "Bearer =",
            "Bearer a=b",
        ] {
            assert!(
                matches!(
                    bearer_token(&parts(&[bad], "/")),
                    Err(CredentialError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            bearer_token(&parts(&["Bearer a", "Bearer b"], "/")),
            Err(CredentialError::Invalid(_))
        ));
        assert!(matches!(
            bearer_token(&parts(&["Bearer a"], "/?access_token=a")),
            Err(CredentialError::Invalid(_))
        ));
    }
}
