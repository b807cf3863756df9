//! An authenticating MCP gateway run from a configuration file: one authorization server, and
//! each configured MCP server behind it at `/{name}/mcp` with its own audience and policy.
//!
//! ```text
//! cargo run --example gateway -- --config examples/gateway.toml [--listen 127.0.0.1:8090] [--check]
//! ```
//!
//! `examples/gateway.toml` fronts the quickstart's notes server (start it first with
//! `PORT=9000 GATEWAY_SECRET=… cargo run --example quickstart -- --behind-gateway`). Secrets
//! come from the environment variables the file names (`DEMO_PASSWORD`, `GATEWAY_SECRET`, …).
//! `--listen` defaults to the port of `public_url` on 127.0.0.1 (set it to `0.0.0.0:PORT`
//! behind a load balancer); `--check` loads and builds everything, prints the routes and exits.
//! Logs follow `RUST_LOG` (default `info`).

use std::error::Error;
use std::net::SocketAddr;

use tower_mcp_auth::config::{Config, Environment, process_environment};
use tower_mcp_auth::gateway::Gateway;

/// The command line.
#[derive(Debug)]
pub struct Args {
    /// The configuration file.
    pub config: String,
    /// Where to listen (default: loopback, the port of `public_url`).
    pub listen: Option<SocketAddr>,
    /// Build, print and exit.
    pub check: bool,
}

const USAGE: &str = "usage: gateway --config FILE [--listen ADDR:PORT] [--check]";

impl Args {
    /// Parses `args` (without the program name).
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let (mut config, mut listen, mut check) = (None, None, false);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" => config = args.next(),
                "--listen" => {
                    let value = args.next().ok_or(USAGE)?;
                    listen = Some(
                        value
                            .parse()
                            .map_err(|e| format!("--listen {value}: {e}"))?,
                    );
                }
                "--check" => check = true,
                "--help" | "-h" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            }
        }
        Ok(Args {
            config: config.ok_or(USAGE)?,
            listen,
            check,
        })
    }
}

/// The gateway `config` describes, its secrets read from `env`.
pub async fn gateway(config: &Config, env: Environment<'_>) -> Result<Gateway, Box<dyn Error>> {
    Ok(config.gateway_builder(env).await?.build()?)
}

/// What an operator sees at start-up: where clients connect, and the routes.
pub fn banner(config: &Config, gateway: &Gateway) -> String {
    let mut text = format!("Gateway:           {}\n", config.public_url);
    for service in &config.services {
        if let Some(resource) = gateway.resource(&service.name) {
            text.push_str(&format!(
                "{:<19}{} -> {}\n                   metadata {}\n",
                format!("Service `{}`:", service.name),
                resource.resource(),
                service.url.as_deref().unwrap_or("-"),
                resource.metadata_url()
            ));
        }
    }
    let base = config.public_url.trim_end_matches('/');
    text.push_str(&format!(
        "Service list:      {base}/services (with a token)\nHealth:            {base}/healthz, {base}/readyz\n"
    ));
    if !config.users.is_empty() {
        let names: Vec<&str> = config.users.iter().map(|u| u.name.as_str()).collect();
        text.push_str(&format!(
            "Dev login users:   {} (development only: passwords from their *_env variables)\n",
            names.join(", ")
        ));
    }
    text
}

/// Where to listen: `--listen`, else 127.0.0.1 on the port of `public_url`.
fn listen_address(args: &Args, config: &Config) -> Result<SocketAddr, Box<dyn Error>> {
    if let Some(address) = args.listen {
        return Ok(address);
    }
    let url = url::Url::parse(&config.public_url)?;
    let port = url
        .port_or_known_default()
        .ok_or("public_url has no port")?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let config = Config::load(&args.config)?;
    let gateway = gateway(&config, &process_environment).await?;
    print!("{}", banner(&config, &gateway));
    if args.check {
        println!("Configuration OK.");
        return Ok(());
    }
    let address = listen_address(&args, &config)?;
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("Listening on:      {}", listener.local_addr()?);
    // Each write is sent at once: without it, SSE frames wait for delayed ACKs (~40 ms).
    let listener = listener.tap_io(|tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {e}");
        }
    });
    axum::serve(
        listener,
        gateway
            .router()
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
