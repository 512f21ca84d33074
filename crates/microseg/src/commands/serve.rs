//! `microseg serve` and `microseg key`: the HTTP server and its keys.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use microseg_core::time::parse_duration;
use microseg_engine::streaming::StreamConfig;
use microseg_store::keys::KeyKind;
use microseg_store::Workspace;

use super::Context;

/// Run the HTTP server: tracking ingestion (the Segment tracking API), real-time segments, management API.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Requests that may wait for the writer before new ones get 503 Retry-After.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// How late an event may arrive and still be placed exactly in sequences and sessions.
    #[arg(long, default_value = "1d", value_name = "DURATION")]
    lateness: String,
}

/// Manage API keys.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key: `write` for ingestion, `admin` for the management API. The secret is
    /// printed once; only its SHA-256 is stored.
    Create {
        /// `write` or `admin`.
        kind: String,
        /// A label.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (ids, kinds, labels; never secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Context, args: ServeArgs) -> Result<()> {
    let workspace = Workspace::open(&ctx.data)?;
    let lateness_ms = parse_duration(&args.lateness).context("--lateness")?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MICROSEG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let options = microseg_server::ServeOptions {
        listen: args.listen,
        queue: args.queue.max(1),
        stream: StreamConfig {
            lateness_ms,
            metrics: workspace.config.metrics_config(),
        },
    };
    microseg_server::serve(workspace, options)?;
    Ok(())
}

pub fn run_key(ctx: &Context, cmd: KeyCommand) -> Result<()> {
    let (_, mut store) = ctx.open()?;
    match cmd {
        KeyCommand::Create { kind, name } => {
            let k = KeyKind::from_name(&kind)
                .with_context(|| format!("unknown key kind '{kind}': use write or admin"))?;
            let (id, secret) = store.create_key(k, name.as_deref())?;
            println!(
                "{}",
                serde_json::json!({"id": id, "kind": k.name(), "key": secret})
            );
            eprintln!("store this key now: it is not shown again");
        }
        KeyCommand::List { json } => {
            let keys = store.keys()?;
            if json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id, "kind": k.kind.name(), "name": k.name}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for k in keys {
                    println!(
                        "{:>4}  {:<6} {}",
                        k.id,
                        k.kind.name(),
                        k.name.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}
