//! `microseg serve` and `microseg key`: the HTTP server and its keys.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use microseg_core::time::parse_duration;
use microseg_engine::streaming::StreamConfig;
use microseg_store::keys::KeyKind;
use microseg_store::Workspace;

use super::Context;
use crate::output::print_table;

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
    /// How often the events past `[limits] retention_days` are deleted while serving.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    retention_every: String,
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
    /// List keys (ids, kinds, labels, whether valid; never secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key now: a running server refuses it within a second.
    Revoke {
        /// The key's id (see `key list`).
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a key by a new one of the same kind and label; the old one stays valid for
    /// the grace period, so the apps that send it can be updated first.
    Rotate {
        /// The key's id (see `key list`).
        id: i64,
        /// How long the old key stays valid, e.g. 0, 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        grace: String,
    },
}

/// A key as `key list --json` shows it, valid or not at `now`.
fn key_json(k: &microseg_store::keys::ApiKey, now: i64) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "kind": k.kind.name(),
        "name": k.name,
        "valid": k.valid_at(now),
        "valid_until": k.valid_until.map(|t| microseg_core::Timestamp(t).to_string()),
        "replaced_by": k.replaced_by,
    })
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
        retention_every: std::time::Duration::from_millis(
            parse_duration(&args.retention_every).context("--retention-every")? as u64,
        ),
    };
    microseg_server::serve(workspace, options)?;
    Ok(())
}

pub fn run_key(ctx: &Context, cmd: KeyCommand) -> Result<()> {
    let (_, mut store) = ctx.open()?;
    let now = microseg_server::now().0;
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
                let list: Vec<_> = keys.iter().map(|k| key_json(k, now)).collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        let until = k
                            .valid_until
                            .map(|t| microseg_core::Timestamp(t).to_string());
                        let status = match (k.valid_at(now), until) {
                            (true, None) => "valid".to_string(),
                            (true, Some(t)) => format!("valid until {t}"),
                            (false, Some(t)) => format!("invalid since {t}"),
                            (false, None) => "invalid".to_string(),
                        };
                        vec![
                            k.id.to_string(),
                            k.kind.name().to_string(),
                            k.name.clone().unwrap_or_default(),
                            status,
                        ]
                    })
                    .collect();
                print_table(&["id", "kind", "name", "status"], &rows);
            }
        }
        KeyCommand::Revoke { id, json } => {
            let k = store.revoke_key(id)?;
            if json {
                println!("{}", key_json(&k, now));
            } else {
                println!("revoked key {id} ({})", k.kind.name());
            }
        }
        KeyCommand::Rotate { id, grace } => {
            let grace_ms = if grace == "0" {
                0
            } else {
                parse_duration(&grace).context("--grace")?
            };
            let (old, new_id, secret) = store.rotate_key(id, grace_ms)?;
            let until = old
                .valid_until
                .map(|t| microseg_core::Timestamp(t).to_string());
            println!(
                "{}",
                serde_json::json!({"id": new_id, "kind": old.kind.name(), "key": secret,
                    "replaces": id, "old_valid_until": until})
            );
            eprintln!("store this key now: it is not shown again");
        }
    }
    Ok(())
}
