//! JWT validation: random and mutated compact JWS never validate, and never panic.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::Sha256;

use super::json::{self, J, Style};
use super::{block_on, config};
use crate::validate::{JwtKey, JwtValidator, TokenError, TokenValidator};

const SECRET: &[u8] = b"an example secret of 32 bytes!!!";
const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "https://mcp.example.com/mcp";

fn validator(typ: bool) -> JwtValidator {
    let mut builder = JwtValidator::builder(ISSUER, AUDIENCE).key(
        JwtKey::hmac(SECRET, Algorithm::HS256)
            .unwrap()
            .with_kid("k1"),
    );
    if typ {
        builder = builder.expected_type("at+jwt");
    }
    builder.build().unwrap()
}

fn validate(v: &JwtValidator, token: &str) -> Result<crate::AuthContext, TokenError> {
    block_on(v.validate(token))
}

fn now() -> u64 {
    super::unix_now()
}

fn good_claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "mcp:tools", "exp": now() + 600})
}

fn good_token() -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good_claims(),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// A token whose header and payload are exactly these texts, signed with the key.
fn signed(header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn header_json() -> impl Strategy<Value = J> {
    let alg = prop_oneof![
        6 => Just(J::s("HS256")),
        1 => prop::sample::select(vec!["none", "None", "hs256", "HS256 ", "HS384", "RS256", "ES256", "EdDSA", ""]).prop_map(J::s),
        1 => json::value(&["a"]),
    ];
    let member = prop_oneof![
        3 => (Just("alg"), alg.clone()),
        1 => (Just("typ"), prop_oneof![Just(J::s("JWT")), Just(J::s("at+jwt")), Just(J::s("application/AT+JWT")), json::value(&["a"])]),
        1 => (Just("kid"), prop_oneof![Just(J::s("k1")), Just(J::s("k2")), json::value(&["a"])]),
        1 => (Just("crit"), prop_oneof![Just(J::Arr(vec![J::s("b64")])), Just(J::Null), json::value(&["a"])]),
        1 => (prop::sample::select(vec!["b64", "jwk", "x5u", "cty", "zip", "Alg"]), json::value(&["a"])),
    ]
    .prop_map(|(k, v)| (k.to_owned(), v));
    (alg, prop::collection::vec(member, 0..4), any::<u8>()).prop_map(|(alg, mut members, at)| {
        members.insert(
            usize::from(at) % (members.len() + 1),
            ("alg".to_owned(), alg),
        );
        J::Obj(members)
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary text, and arbitrary JWT-shaped text: never valid, never a panic.
    #[test]
    fn random_tokens_never_validate(
        token in prop_oneof![
            "\\PC{0,64}",
            "[A-Za-z0-9_=-]{0,40}\\.[A-Za-z0-9_=-]{0,40}\\.[A-Za-z0-9_=-]{0,60}",
            (prop::collection::vec(any::<u8>(), 0..48), prop::collection::vec(any::<u8>(), 0..48), prop::collection::vec(any::<u8>(), 0..48))
                .prop_map(|(h, p, s)| format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(p), URL_SAFE_NO_PAD.encode(s))),
        ],
    ) {
        prop_assert!(validate(&validator(false), &token).is_err());
    }

    /// A valid token with characters replaced, inserted or removed, segments swapped or
    /// cut: valid only if it is unchanged (base64url has one spelling per value here).
    #[test]
    fn mutated_tokens_never_validate(
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(b"AQgwz09-_.=+/ \0\xc3".to_vec()), 0u8..4), 1..4),
    ) {
        let token = good_token();
        prop_assert!(validate(&validator(false), &token).is_ok());
        let mut bytes = token.clone().into_bytes();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.truncate(i),
            }
        }
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        if mutated != token {
            prop_assert!(validate(&validator(false), &mutated).is_err(), "{}", mutated);
        }
    }

    /// Correctly signed tokens with hostile headers (duplicate or escaped `alg`, `none`,
    /// case variants, `crit`, odd types): valid only when the header is a plain
    /// `{"alg":"HS256"}` plus harmless members (with the `typ` required if configured),
    /// and always when it is just `alg`, `typ` and `kid` as they should be.
    #[test]
    fn hostile_headers_are_judged_strictly(
        header in header_json(),
        style in prop::collection::vec(any::<u8>(), 1..32),
        typ in any::<bool>(),
    ) {
        let text = json::render(&header, &mut Style::new(&style));
        let token = signed(&text, &good_claims().to_string());
        let result = validate(&validator(typ), &token);
        // The members the validator reads must be unique (RFC 7515 §4 allows a parser to
        // keep the last of other duplicates: unknown members are ignored).
        let known = ["alg", "typ", "kid", "crit"];
        let is_str_or_null = |k: &str| header.get(k, true).is_none_or(|v| matches!(v, J::Str(_) | J::Null));
        let plain = !header.duplicates_among(&known)
            && header.get("alg", true).and_then(J::as_str) == Some("HS256")
            && header.get("crit", true).is_none_or(|c| *c == J::Null)
            && is_str_or_null("typ") && is_str_or_null("kid")
            && header.get("kid", true).and_then(J::as_str).is_none_or(|k| k == "k1")
            && (!typ || header.get("typ", true).and_then(J::as_str).is_some_and(|t| {
                t.strip_prefix("application/").unwrap_or(t).eq_ignore_ascii_case("at+jwt")
            }));
        if result.is_ok() {
            prop_assert!(plain, "accepted: {}", text);
        } else if plain
            && matches!(&header, J::Obj(m) if m.iter().all(|(k, _)| ["alg", "typ", "kid"].contains(&k.as_str())))
        {
            // Other members may trip jsonwebtoken's own header parser (refusing is safe);
            // a plain header must pass.
            prop_assert!(false, "refused: {} {:?}", text, result);
        }
    }

    /// Correctly signed tokens with hostile claims: accepted only with the right issuer,
    /// a non-empty subject, an audience naming this resource, and a future `exp`.
    #[test]
    fn hostile_claims_are_judged_strictly(
        iss in prop_oneof![Just(json!(ISSUER)), Just(json!("https://auth.example.com/")), Just(json!("HTTPS://auth.example.com")), Just(json!(null)), Just(json!([ISSUER]))],
        aud in prop_oneof![
            Just(json!(AUDIENCE)), Just(json!("https://MCP.example.com:443/mcp")), Just(json!("https://mcp.example.com/mcp/")),
            Just(json!("https://mcp.example.com/mcp#x")), Just(json!(["x", AUDIENCE])), Just(json!([1, "y"])), Just(json!(null)),
            Just(json!("https://mcp.example.com/%6Dcp")), Just(json!("https://mcp.example.com/./mcp")),
        ],
        sub in prop_oneof![Just(json!("alice")), Just(json!("")), Just(json!(7)), Just(json!(null))],
        exp in prop_oneof![Just(0i64), Just(1), Just(600), Just(-600), Just(i64::MAX / 2)],
        exp_form in 0u8..3,
    ) {
        let exp_value = match exp_form {
            0 => json!(now() as i64 + exp),
            1 => json!((now() as i64 + exp) as f64 + 0.5),
            _ => json!((now() as i64 + exp).to_string()),
        };
        let mut claims = json!({"iss": iss, "aud": aud, "sub": sub, "exp": exp_value});
        for k in ["iss", "aud", "sub"] {
            if claims[k].is_null() {
                claims.as_object_mut().unwrap().remove(k);
            }
        }
        let token = signed(r#"{"alg":"HS256"}"#, &claims.to_string());
        let result = validate(&validator(false), &token);
        let canonical = |a: &str| crate::resource::canonical_audience(a).into_owned();
        let aud_ok = match &claims["aud"] {
            Value::String(a) => canonical(a) == AUDIENCE,
            Value::Array(a) => a.iter().filter_map(Value::as_str).any(|a| canonical(a) == AUDIENCE),
            _ => false,
        };
        let expected = claims["iss"] == json!(ISSUER)
            && aud_ok
            && claims["sub"].as_str().is_some_and(|s| !s.is_empty())
            && exp_form != 2
            // `exp` now (or a second ago) is within the 30 s leeway.
            && matches!(exp, 0 | 1 | 600);
        prop_assert_eq!(result.is_ok(), expected, "{} {:?}", claims, result);
    }
}
