//! A workspace: one directory holding one customer base.
//!
//! ```text
//! DIR/microseg.toml   config: trait types, what counts as an order and a session
//! DIR/store.sqlite    the durable store (SQLite, WAL), the source of truth
//! DIR/logs/           rejects files of imports
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use microseg_core::{Schema, TraitSpec, TraitType};
use microseg_engine::MetricsConfig;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// The config file's name inside a workspace.
pub const CONFIG_FILE: &str = "microseg.toml";
/// The store's file name inside a workspace.
pub const STORE_FILE: &str = "store.sqlite";

/// `microseg.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What counts as an order and a session.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Declared trait types; they win over inference.
    #[serde(default)]
    pub traits: BTreeMap<String, TraitSpec>,
    /// What `microseg serve` exposes, and how long it waits for clients.
    #[serde(default)]
    pub server: ServerSection,
    /// What anyone with a write key can make the workspace hold.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Where webhooks may be delivered.
    #[serde(default)]
    pub webhooks: WebhooksSection,
    /// Rules every campaign obeys (docs/campaigns.md).
    #[serde(default)]
    pub activation: ActivationSection,
    /// Channel adapters' settings (`[channels.email]`, ...), read by delivery.
    #[serde(default)]
    pub channels: BTreeMap<String, toml::Table>,
    /// Where `microseg warehouse` loads data and runs segments (docs/warehouse.md).
    #[serde(default)]
    pub warehouse: WarehouseSection,
}

/// The `[warehouse.*]` sections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarehouseSection {
    /// `[warehouse.postgres]`.
    pub postgres: Option<PostgresWarehouse>,
    /// `[warehouse.duckdb]`.
    pub duckdb: Option<DuckDbWarehouse>,
    /// `[warehouse.spark]`.
    pub spark: Option<SparkWarehouse>,
}

/// `[warehouse.postgres]`: a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresWarehouse {
    /// `postgres://user[:password]@host[:port]/database` (or key=value settings).
    pub url: String,
    /// The schema holding `profiles` and `events` (default `public`).
    #[serde(default)]
    pub schema: Option<String>,
    /// PEM file of the certificate authorities the server's TLS certificate is checked
    /// against, for a database whose certificate is not signed by a public root (a
    /// cloud provider's own CA); relative to the workspace directory.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `[warehouse.duckdb]`: a DuckDB database file, run through the DuckDB CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuckDbWarehouse {
    /// The database file (relative to the workspace directory).
    pub file: PathBuf,
    /// The DuckDB CLI to run (default `duckdb` on the `PATH`).
    #[serde(default)]
    pub cli: Option<PathBuf>,
}

/// `[warehouse.spark]`: a Spark Connect server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkWarehouse {
    /// `sc://host:port` (no TLS; `/;token=...` and other parameters are refused).
    pub url: String,
    /// A directory the cluster reads, where `warehouse load` writes the Parquet files
    /// (a shared mount; relative to the workspace directory; default
    /// `warehouse-spark` in the workspace, right for a Spark on the same machine).
    #[serde(default)]
    pub stage: Option<PathBuf>,
    /// The same directory as the cluster names it (`s3a://...`, `dbfs:/...`); default:
    /// `stage` itself.
    #[serde(default)]
    pub stage_uri: Option<String>,
    /// The database holding `profiles` and `events` (created by `warehouse load` when
    /// missing); default: the session's current one, usually `default`.
    #[serde(default)]
    pub database: Option<String>,
}

/// The `[activation]` section, as written; `microseg-activate` reads and checks it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivationSection {
    /// Share of all profiles that get no marketing campaign at all.
    pub global_control: f64,
    /// Share of sends that get the channel's general message instead.
    pub exploration: f64,
    /// Frequency caps: channel (or `all`) → `N/period`, e.g. `2/7d`.
    pub caps: BTreeMap<String, String>,
    /// `HH:MM-HH:MM` in the profile's `timezone` trait (UTC without one); empty: none.
    pub quiet_hours: String,
    /// The general message per channel: field → template.
    pub exploration_message: BTreeMap<String, BTreeMap<String, String>>,
    /// Website placement → content template shown when no campaign wins it.
    pub fallback: BTreeMap<String, String>,
}

/// The `[webhooks]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksSection {
    /// Networks webhooks may reach although loopback, private, link-local or otherwise
    /// special (`["127.0.0.0/8"]` for a receiver on this machine).
    pub allow_networks: Vec<String>,
    /// Networks webhooks never reach, besides the special ones.
    pub deny_networks: Vec<String>,
}

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Serve `/metrics` and `/openapi.json` without the admin token.
    pub public_metrics: bool,
    /// Seconds a client has to send a request's headers, counted from the connection's
    /// start or the end of the last response (so it is also the idle timeout), before
    /// the connection is closed.
    pub header_timeout_seconds: u64,
    /// Requests per second each write key may send, sustained (a token bucket).
    pub key_requests_per_second: f64,
    /// Requests a write key may send at once above that rate (the bucket's size).
    pub key_burst: u32,
    /// Web origins (`https://shop.example`, or `*`) whose pages may call `GET /v1/decide`
    /// (CORS); empty: none.
    pub cors_origins: Vec<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            public_metrics: false,
            header_timeout_seconds: 10,
            key_requests_per_second: 5000.0,
            key_burst: 10_000,
            cors_origins: Vec::new(),
        }
    }
}

/// The `[limits]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Most distinct trait names in the workspace; a call adding more is refused.
    pub traits: usize,
    /// Most distinct event names in the workspace; a call adding more is refused.
    pub event_names: usize,
    /// Events dated more than this many minutes after the server's clock are refused.
    pub future_minutes: u64,
    /// Events older than this many days are deleted by `microseg prune` and when
    /// `microseg serve` starts; 0 keeps every event.
    pub retention_days: u32,
    /// Whether an `alias` call may merge two known customers (both with a `userId`);
    /// merging an anonymous visitor into a customer is always allowed.
    pub alias_merges_customers: bool,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            traits: 500,
            event_names: 1000,
            future_minutes: 24 * 60,
            retention_days: 0,
            alias_merges_customers: false,
        }
    }
}

/// The `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Event names that count as an order (`order_event = "name"`, the older spelling, is
    /// one name).
    #[serde(alias = "order_event", deserialize_with = "one_or_more")]
    pub order_events: Vec<String>,
    /// Event name that explicitly starts a session.
    pub session_event: String,
    /// Minutes without events after which the next event opens a new session.
    pub session_gap_minutes: u32,
}

impl Default for MetricsSection {
    fn default() -> Self {
        let d = MetricsConfig::default();
        MetricsSection {
            order_events: d.order_events,
            session_event: d.session_event,
            session_gap_minutes: (d.session_gap_ms / 60_000) as u32,
        }
    }
}

/// A name or a list of names.
fn one_or_more<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "an event name or a list of event names")]
    enum OneOrMore {
        One(String),
        More(Vec<String>),
    }
    Ok(match OneOrMore::deserialize(d)? {
        OneOrMore::One(name) => vec![name],
        OneOrMore::More(names) => names,
    })
}

impl Config {
    /// The metrics settings for the engine.
    pub fn metrics_config(&self) -> MetricsConfig {
        MetricsConfig {
            order_events: self.metrics.order_events.clone(),
            session_event: self.metrics.session_event.clone(),
            session_gap_ms: self.metrics.session_gap_minutes as i64 * 60_000,
        }
    }

    /// The declared trait types as a schema.
    pub fn declared_schema(&self) -> Schema {
        self.traits.clone()
    }
}

const DEFAULT_CONFIG: &str = r#"# microseg workspace config.

[metrics]
# The events that count as orders (orders, revenue, aov, recency, RFM, CLV):
# microseg's own name and the one of Segment's e-commerce spec.
order_events = ["order_completed", "Order Completed"]
# An event of this name always opens a new session (visits).
session_event = "session_started"
# Minutes without events after which the next event opens a new session.
session_gap_minutes = 30

[server]
# /metrics and /openapi.json need the admin token unless this is true.
public_metrics = false
# Seconds to send a request's headers, counted from the connection's start or the end
# of the last response: a connection idle that long is closed.
header_timeout_seconds = 10
# Per write key: requests per second sustained, and the burst above it (429 past
# them). Every visitor of a site sends with the site's one key: size it for the site.
key_requests_per_second = 5000.0
key_burst = 10000
# Web origins whose pages may call GET /v1/decide from the browser (CORS), e.g.
# ["https://shop.example"], or ["*"]; empty: none.
cors_origins = []

[limits]
# A write key ships inside public web pages: these bound what anyone can make the
# workspace hold. Calls past them are refused with 422 limit_reached.
traits = 500
event_names = 1000
# Events dated more than this many minutes after the server's clock are refused.
future_minutes = 1440
# Events older than this many days are deleted by `microseg prune` and when the server
# starts; 0 keeps every event.
retention_days = 0
# Whether an `alias` may merge two known customers (anyone with the write key could
# otherwise fuse two people for good); anonymous visitors are always merged.
alias_merges_customers = false

[webhooks]
# Webhooks never reach loopback, private, link-local (cloud metadata) and other special
# networks unless listed here, e.g. ["127.0.0.0/8"] for a receiver on this machine.
allow_networks = []
deny_networks = []

# Declared trait types win over inference. Types: bool, integer, float, string,
# string_set (items separated by any of `separators`, default ";|"), timestamp.
# [traits.interests]
# type = "string_set"
# separators = ";"
"#;

/// Takes an exclusive advisory lock on `file` without waiting: false when another
/// process holds it. (`File::try_lock` needs Rust 1.89; the crate supports 1.85.)
#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this File owns and keeps open; it only takes an
    // advisory lock, released when the descriptor is closed.
    let done = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if done == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Without flock, no lock (documented: run imports with the server stopped).
#[cfg(not(unix))]
fn try_lock(_file: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

/// The workspace's writer lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

/// An opened workspace directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The directory.
    pub dir: PathBuf,
    /// Its config.
    pub config: Config,
}

impl Workspace {
    /// Creates the workspace at `dir` (and the directory) if it does not exist yet, and
    /// opens it. Returns whether it was created.
    pub fn init(dir: &Path) -> Result<(Workspace, bool), StoreError> {
        let config_path = dir.join(CONFIG_FILE);
        let created = !config_path.exists();
        if created {
            let io = |source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            };
            std::fs::create_dir_all(dir.join("logs")).map_err(io)?;
            std::fs::write(&config_path, DEFAULT_CONFIG).map_err(io)?;
        }
        let ws = Workspace::open(dir)?;
        crate::store::Store::open(&ws)?;
        Ok((ws, created))
    }

    /// Opens an existing workspace.
    pub fn open(dir: &Path) -> Result<Workspace, StoreError> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(StoreError::NotAWorkspace(dir.to_path_buf()));
        }
        let text = crate::reader::read_to_string(&config_path)?;
        let config: Config = toml::from_str(&text).map_err(|e| {
            let place = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            StoreError::Config {
                path: config_path.clone(),
                reason: format!("{}{}", place.unwrap_or_default(), e.message()),
            }
        })?;
        for (name, spec) in &config.traits {
            if spec.separators.is_some() && spec.ty != TraitType::StringSet {
                return Err(StoreError::Config {
                    path: config_path,
                    reason: format!("trait '{name}': separators only apply to string_set"),
                });
            }
        }
        Ok(Workspace {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// The store file.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
    }

    /// Takes the workspace's writer lock (`DIR/writer.lock`, an advisory file lock the
    /// system releases when the process ends, even by `kill -9`), held until the
    /// returned value is dropped. `microseg serve` holds it while it runs, and the
    /// commands that write profiles or events (imports, erasure, retention) while they
    /// write: the server keeps profile ids in memory, so a profile added beside it would
    /// collide with its next one. `who` says what is taking it, for the refusal.
    pub fn lock_writer(&self, who: &str) -> Result<WriterLock, StoreError> {
        self.lock_file("writer.lock", who)
    }

    /// The delivery lock: one process hands the outbox over at a time (`microseg
    /// deliver`, or `serve`'s delivery loop), so no message goes out twice from two
    /// deliverers. Taken like [`Workspace::lock_writer`].
    pub fn lock_delivery(&self, who: &str) -> Result<WriterLock, StoreError> {
        self.lock_file("delivery.lock", who)
    }

    fn lock_file(&self, name: &str, who: &str) -> Result<WriterLock, StoreError> {
        let path = self.dir.join(name);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match try_lock(&file) {
            Ok(true) => {}
            Ok(false) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(StoreError::Refused(format!(
                    "{who}: the workspace is in use by {} (see {}): wait for it, or stop \
                     the server and use the command then (or the server's API)",
                    if holder.is_empty() {
                        "another microseg"
                    } else {
                        holder
                    },
                    path.display()
                )));
            }
            Err(e) => return Err(io(e)),
        }
        // Who holds it, for the message above (the lock, not this text, is what counts).
        let _ = file.set_len(0);
        let _ = std::io::Write::write_all(
            &mut &file,
            format!("{who} (pid {})\n", std::process::id()).as_bytes(),
        );
        Ok(WriterLock { _file: file })
    }

    /// The logs directory (created on demand).
    pub fn logs_dir(&self) -> Result<PathBuf, StoreError> {
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|source| StoreError::Io {
            path: logs.clone(),
            source,
        })?;
        Ok(logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(toml_text: &str) -> Result<Vec<String>, String> {
        toml::from_str::<Config>(toml_text)
            .map(|c| c.metrics_config().order_events)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn order_events_are_one_name_or_a_list_and_default_to_segments_name_too() {
        assert_eq!(
            metrics("").unwrap(),
            ["order_completed", "Order Completed"],
            "without configuration, Segment's e-commerce name counts"
        );
        assert_eq!(
            metrics("[metrics]\norder_event = \"purchase\"").unwrap(),
            ["purchase"]
        );
        assert_eq!(
            metrics("[metrics]\norder_events = [\"a\", \"b\"]").unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            metrics("[metrics]\norder_events = 3").unwrap_err(),
            "an event name or a list of event names"
        );
        let written: Config = toml::from_str(DEFAULT_CONFIG).unwrap();
        assert_eq!(
            written,
            Config::default(),
            "`microseg init` writes the defaults"
        );
    }
}
