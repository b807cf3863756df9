//! Integration tests: one binary, a module per capability, real HTTP on 127.0.0.1.

mod support;

#[path = "../../examples/quickstart.rs"]
#[allow(dead_code)]
mod quickstart;

#[path = "../../examples/gateway.rs"]
#[allow(dead_code)]
mod gateway_example;

#[cfg(feature = "atag")]
mod atag;
#[cfg(feature = "server")]
mod attacks;
#[cfg(feature = "rate-limit")]
mod auth_failures;
mod bearer;
#[cfg(feature = "atag")]
mod browser;
#[cfg(feature = "server")]
mod code_flow;
#[cfg(feature = "atag")]
mod dpop;
#[cfg(feature = "atag")]
mod enterprise;
#[cfg(feature = "atag")]
mod external_idp;
#[cfg(feature = "gateway")]
mod gateway;
#[cfg(feature = "gateway")]
mod gateway_example_tests;
mod introspection;
mod jwks;
mod jwt;
#[cfg(all(feature = "rate-limit", feature = "server"))]
mod limits;
#[cfg(feature = "atag")]
mod machine_clients;
mod metadata;
#[cfg(all(feature = "metrics", feature = "gateway"))]
mod metrics;
#[cfg(feature = "server")]
mod oauth_server;
#[cfg(all(feature = "server", feature = "metrics"))]
mod outbound;
#[cfg(feature = "server")]
mod pages;
mod policy;
mod quickstart_rmcp;
#[cfg(feature = "server")]
mod registration;
#[cfg(feature = "config")]
mod reload;
#[cfg(feature = "redis")]
mod replicas;
#[cfg(feature = "server")]
mod revocation;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "atag")]
mod step_up;
#[cfg(feature = "redis")]
mod store;
#[cfg(feature = "atag")]
mod ts_sdk;
#[cfg(feature = "server")]
mod upstream;
