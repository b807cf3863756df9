//! Reading the bearer credential from a request (RFC 6750 §2), strictly.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, Uri};

/// Why no token could be taken from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredentialError {
    /// No bearer credential at all (no header, another scheme, or a token only in the query,
    /// which we do not accept): the client is asked to authenticate.
    Missing,
    /// A malformed request (RFC 6750 §3.1 `invalid_request`, answered 400).
    Invalid(&'static str),
}

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP` (RFC 9449 §7.1): a proof of the bound key must come with it.
    Dpop,
}

/// Takes the token from the one credentials header `name` (`Authorization`, or an ingress
/// header such as `X-Authorization` where a proxy in front reserves `Authorization`), with its
/// scheme: `Bearer`, or `DPoP` (RFC 9449 §7.1).
///
/// - exactly one header, else `invalid_request`;
/// - the scheme case-insensitively (RFC 7235 §2.1); another scheme counts as no token;
/// - the token's syntax is checked by [`check_syntax`], which the layer calls only on a token
///   cache miss (a hit is byte-equal to a token that passed it);
/// - a token in the query (`access_token=`) is never read: alone, the request counts as
///   unauthenticated; beside a header, it is two methods at once, `invalid_request`.
///
/// The token comes back as bytes: on a cache hit it is only hashed and compared, so the
/// per-byte UTF-8/visible-ASCII scan of `HeaderValue::to_str` is left to the miss path.
pub(crate) fn token_in<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    uri: &Uri,
) -> Result<(Scheme, &'a [u8]), CredentialError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(CredentialError::Invalid(if name == AUTHORIZATION {
            "more than one Authorization header"
        } else {
            "more than one token header"
        }));
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
    let value = value.as_bytes();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(space) => (&value[..space], &value[space..]),
        None => (value, &[][..]),
    };
    let scheme = if scheme.eq_ignore_ascii_case(b"bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case(b"dpop") {
        Scheme::Dpop
    } else {
        return Err(CredentialError::Missing);
    };
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    Ok((scheme, &rest[start..]))
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
/// Returns the token as text once it is known to be one.
pub(crate) fn check_syntax(token: &[u8]) -> Result<&str, CredentialError> {
    let malformed = CredentialError::Invalid("the bearer token is malformed");
    let padding = token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..token.len() - padding];
    if body.is_empty() || !body.iter().all(|&b| B64TOKEN[usize::from(b)]) {
        return Err(malformed);
    }
    // Every byte is ASCII now, so this cannot fail; no unwrap all the same.
    std::str::from_utf8(token).map_err(|_| malformed)
}

/// Membership table of the `b64token` characters: one lookup per byte instead of a chain of
/// range comparisons (tokens run to a kilobyte or more).
const B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

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
        check_syntax(super::token_in(&p.0, &AUTHORIZATION, &p.1)?.1)
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

    /// A query string that carries no `access_token` must not cost a valid header its token:
    /// only the `access_token` parameter (under any percent-encoding of its name) makes the
    /// request two credentials at once.
    #[test]
    fn query_without_access_token_keeps_the_header_token() {
        for uri in [
            "/mcp?",
            "/mcp?foo=bar",
            "/mcp?access_tokens=x",
            "/mcp?access_token_x=1&y",
            "/mcp?token=abc",
            "/mcp?x=access_token",
        ] {
            assert_eq!(
                bearer_token(&parts(&["Bearer abc"], uri)),
                Ok("abc"),
                "{uri}"
            );
        }
        for uri in [
            "/mcp?foo=bar&access_token=x",
            "/mcp?access%5Ftoken=x",
            "/mcp?access_token",
            "/mcp?access_token=",
        ] {
            assert!(
                matches!(
                    bearer_token(&parts(&["Bearer abc"], uri)),
                    Err(CredentialError::Invalid(_))
                ),
                "{uri}"
            );
        }
    }

    /// Every `b64token` character is accepted and padding only at the end; anything else (a
    /// quote, a comma, a control or non-ASCII byte that another parser might split or fold on)
    /// is refused.
    #[test]
    fn b64token_alphabet_is_exact() {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/";
        assert_eq!(check_syntax(alphabet.as_bytes()), Ok(alphabet));
        assert_eq!(check_syntax(b"a="), Ok("a="));
        assert_eq!(check_syntax(b"a==="), Ok("a==="));
        for b in 0..=255u8 {
            let token = [b'a', b];
            let expected = b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
            assert_eq!(check_syntax(&token).is_ok(), expected, "byte {b:#04x}");
        }
        for bad in [
            &b""[..],
            b"=",
            b"==",
            b"a=b",
            b"=a",
            b"a,b",
            b"a;b",
            b"\xc3\xa9",
        ] {
            assert!(
                matches!(check_syntax(bad), Err(CredentialError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
