//! Revocation reaches the bearer layer in one process: a revoked token, the tokens of a
//! replayed code, and a family revoked by refresh-token reuse are refused on the next request,
//! cached or not.

use std::sync::atomic::Ordering;

use crate::oauth_server::*;
use crate::support::*;

#[tokio::test]
async fn revoked_access_token_is_refused_on_the_next_request_despite_the_cache() {
    let server = single().await;
    let client_id = server.register().await;
    let code = server.code(&browser(), &client_id, &server.resource).await;
    let (access, _) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    // Twice: the second is served from the bearer layer's token cache.
    assert_eq!(server.status(&access).await, 200);
    assert_eq!(server.status(&access).await, 200);
    assert_eq!(server.revoke(&client_id, &access).await, 200);
    let served = server.served.load(Ordering::SeqCst);
    let refused = server.call(&access).await;
    assert_eq!(refused.status(), 401, "refused at once, cached or not");
    assert!(www_authenticate(&refused).contains("error=\"invalid_token\""));
    assert_eq!(
        server.served.load(Ordering::SeqCst),
        served,
        "never reached the tool"
    );
}

#[tokio::test]
async fn replayed_code_revokes_the_cached_access_token() {
    let server = single().await;
    let client_id = server.register().await;
    let code = server.code(&browser(), &client_id, &server.resource).await;
    let (access, refresh) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    assert_eq!(server.status(&access).await, 200);
    let replay = server.redeem(&client(), &client_id, &code).await;
    assert_eq!(replay.status(), 400, "the replay is refused");
    assert_eq!(
        server.status(&access).await,
        401,
        "the first access token is revoked"
    );
    let refreshed = server.refresh(&client_id, &refresh).await;
    assert_eq!(refreshed.status(), 400, "and so is its refresh token");
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_cached_access_tokens_of_the_family() {
    let server = single().await;
    let client_id = server.register().await;
    let code = server.code(&browser(), &client_id, &server.resource).await;
    let (first, refresh) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    let (second, next) = tokens_of(server.refresh(&client_id, &refresh).await).await;
    // The successor is used: the rotated token is dead from now on.
    let (third, _) = tokens_of(server.refresh(&client_id, &next).await).await;
    for token in [&first, &second, &third] {
        assert_eq!(server.status(token).await, 200);
    }
    let reuse = server.refresh(&client_id, &refresh).await;
    assert_eq!(reuse.status(), 400, "reuse of a rotated token");
    for token in [&first, &second, &third] {
        assert_eq!(
            server.status(token).await,
            401,
            "the whole family is revoked"
        );
    }
}
