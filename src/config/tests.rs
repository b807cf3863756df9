//! Unit tests of the configuration file.

use super::*;

const MINIMAL: &str = "public_url = \"https://gw.example.com\"\n";

fn env(name: &str) -> Option<String> {
    match name {
        "PW" => Some("a-password".into()),
        "SECRET" => Some("s".repeat(32)),
        "SHORT" => Some("short".into()),
        "GH" => Some("github-secret".into()),
        _ => None,
    }
}

#[test]
fn headers_are_renamed_or_left_out_and_unknown_keys_are_errors() {
    let config = Config::from_toml(&format!(
        "{MINIMAL}[gateway.user_headers]\nsubject = \"x-user-id\"\nscopes = false\nemail = true\n"
    ))
    .unwrap();
    let headers = &config.gateway.user_headers;
    assert!(matches!(&headers["subject"], HeaderChoice::Name(n) if n == "x-user-id"));
    assert!(matches!(headers["scopes"], HeaderChoice::Enabled(false)));
    for bad in [
        format!("{MINIMAL}[[users]]\nname = \"a\"\npassword = \"inline\"\n"),
        format!("{MINIMAL}[store]\nkind = \"postgres\"\n"),
        format!("{MINIMAL}unknown = 1\n"),
        "services = []\n".to_owned(),
    ] {
        assert!(Config::from_toml(&bad).is_err(), "{bad}");
    }
}

#[test]
fn secrets_come_from_the_environment_and_a_short_deployment_secret_is_refused() {
    let config = Config::from_toml(&format!(
        "secret_key_env = \"SECRET\"\n{MINIMAL}[[third_party]]\nid = \"gh\"\nkind = \"github\"\nclient_id = \"id\"\nclient_secret_env = \"GH\"\n"
    ))
    .unwrap();
    assert_eq!(config.third_party_services(&env).unwrap().len(), 1);
    assert!(config.vault_keys(&env).unwrap().is_some());
    let a = config.derived_key(&env, "a").unwrap().unwrap();
    assert_ne!(
        Some(a),
        config.derived_key(&env, "b").unwrap(),
        "one key per purpose"
    );
    assert!(
        config.third_party_services(&|_| None).is_err(),
        "the secret is missing"
    );
    let short = Config::from_toml(&format!("secret_key_env = \"SHORT\"\n{MINIMAL}")).unwrap();
    assert!(short.vault_keys(&env).is_err());
    let custom = Config::from_toml(&format!(
        "{MINIMAL}[[third_party]]\nid = \"x\"\nkind = \"custom\"\nclient_id = \"id\"\n"
    ))
    .unwrap();
    let refused = custom.third_party_services(&env).unwrap_err().to_string();
    assert!(refused.contains("authorize_url"), "{refused}");
}

#[test]
fn a_service_without_a_policy_opens_every_tool_to_a_valid_token() {
    let config = Config::from_toml(&format!("{MINIMAL}[[services]]\nname = \"open\"\n")).unwrap();
    let policy = config.policy("open").unwrap();
    let ctx = crate::AuthContext::from_claims(
        serde_json::json!({"sub": "u"}).as_object().unwrap().clone(),
    )
    .unwrap();
    assert!(policy.permits(crate::policy::Kind::Tool, "anything", &ctx));
    assert!(config.policy("missing").is_err());
    assert_eq!(
        config.resource_uri("open"),
        "https://gw.example.com/open/mcp"
    );
}

#[test]
fn outbound_allowances_read_from_the_file() {
    let policy = |allow: &str| {
        Config::from_toml(&format!("{MINIMAL}[outbound]\nallow = {allow}\n"))
            .unwrap()
            .outbound
            .address_policy()
    };
    let default = Config::from_toml(MINIMAL)
        .unwrap()
        .outbound
        .address_policy()
        .unwrap();
    assert!(!default.permits("127.0.0.1".parse().unwrap()));
    let local = policy(r#"["loopback", "10.20.0.0/16"]"#).unwrap();
    assert!(local.permits("127.0.0.1".parse().unwrap()));
    assert!(local.permits("10.20.1.1".parse().unwrap()));
    assert!(!local.permits("10.21.1.1".parse().unwrap()));
    assert!(!local.permits("169.254.169.254".parse().unwrap()));
    let private = policy(r#"["private"]"#).unwrap();
    assert!(private.permits("192.168.0.1".parse().unwrap()));
    assert!(policy(r#"["any"]"#).unwrap().is_unrestricted());
    let refused = policy(r#"["intranet"]"#).unwrap_err().to_string();
    assert!(refused.contains("intranet"), "{refused}");
    assert!(Config::from_toml(&format!("{MINIMAL}[outbound]\ndeny = []\n")).is_err());
}

#[test]
fn machine_clients_come_from_a_public_key_file_or_a_jwks_url() {
    let pem = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/ec256.pub.pem");
    let config = Config::from_toml(&format!(
        "{MINIMAL}[[clients]]\nid = \"report\"\npublic_key_file = \"{pem}\"\nscopes = [\"mcp:tools\"]\n\
         [[clients]]\nid = \"remote\"\njwks_uri = \"https://keys.example.com/jwks\"\n"
    ))
    .unwrap();
    let addresses = crate::address::AddressPolicy::public_only();
    assert!(
        config.clients[0]
            .machine_client(&addresses)
            .unwrap()
            .is_some()
    );
    assert!(
        config.clients[1]
            .machine_client(&addresses)
            .unwrap()
            .is_some()
    );
    let both = Config::from_toml(&format!(
        "{MINIMAL}[[clients]]\nid = \"x\"\npublic_key_file = \"{pem}\"\nsecret_env = \"PW\"\n"
    ))
    .unwrap();
    assert!(both.clients[0].machine_client(&addresses).is_err());
    let bad_alg = Config::from_toml(&format!(
        "{MINIMAL}[[clients]]\nid = \"x\"\npublic_key_file = \"{pem}\"\nalgorithm = \"HS256\"\n"
    ))
    .unwrap();
    assert!(bad_alg.clients[0].machine_client(&addresses).is_err());
}

#[tokio::test]
async fn enterprise_idps_id_jag_audiences_and_dpop_nonces_come_from_the_file() {
    let text = format!(
        "secret_key_env = \"SECRET\"\n{MINIMAL}\
         [[services]]\nname = \"notes\"\n\
         [[clients]]\nid = \"acme-assistant\"\nsecret_env = \"SECRET\"\nscopes = [\"mcp:tools\"]\n\
         [[enterprise_idps]]\nid = \"acme\"\nissuer = \"https://login.acme.example\"\n\
         jwks_uri = \"https://login.acme.example/keys\"\nallowed_clients = [\"acme-assistant\"]\n\
         [[id_jag_audiences]]\nissuer = \"https://partner.example\"\nclients = {{ \"acme-assistant\" = \"theirs\" }}\n\
         [dpop]\nrequire_nonces = true\n"
    );
    let config = Config::from_toml(&text).unwrap();
    assert_eq!(config.enterprise_idps[0].id, "acme");
    assert_eq!(
        config.id_jag_audiences[0].clients["acme-assistant"],
        "theirs"
    );
    let auth = config
        .auth_server_builder(&env)
        .await
        .unwrap()
        .resource(config.resource_uri("notes"))
        .build()
        .unwrap();
    let _ = auth;
    // Nonces derive from the deployment secret: without one, the file is refused.
    let without_secret =
        Config::from_toml(&format!("{MINIMAL}[dpop]\nrequire_nonces = true\n")).unwrap();
    assert!(without_secret.auth_server_builder(&env).await.is_err());
    assert!(Config::from_toml(&format!("{MINIMAL}[dpop]\nnonces = 1\n")).is_err());
}
