//! Segments and metrics run where the data already lives: the workspace exported as
//! Parquet in the layout of docs/warehouse.md, loaded into PostgreSQL, DuckDB or Spark,
//! and a segment's SQL (`microseg_store::sql`) run there, its member list brought back.
//!
//! Clients: PostgreSQL through the `postgres` crate (the Rust driver), DuckDB through its
//! own command-line shell (no database is compiled into microseg), Spark through Spark
//! Connect's documented gRPC protocol over `h2` ([`spark`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use microseg_store::sql::Dialect;
use microseg_store::{Progress, Store, StoreError, Workspace};

#[cfg(test)]
mod differential;
pub mod duckdb;
pub mod parquet;
pub mod postgres;
mod run;
pub mod spark;

pub use parquet::{export, Exported};
pub use run::{run, Ran, SegmentSql};

/// Errors of the warehouse backends: each names the engine or file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// The workspace's store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `microseg.toml` has no `[warehouse.ENGINE]`, or it is unusable.
    #[error("microseg.toml: {0}")]
    Config(String),
    /// The engine could not be reached.
    #[error("{engine}: cannot connect to {target}: {reason}")]
    Connect {
        /// `postgres`, `duckdb` or `spark`.
        engine: &'static str,
        /// What was dialled (without a password).
        target: String,
        /// Why.
        reason: String,
    },
    /// The engine refused or failed a statement.
    #[error("{engine}: {reason}")]
    Engine {
        /// `postgres`, `duckdb` or `spark`.
        engine: &'static str,
        /// The engine's message.
        reason: String,
    },
    /// The engine does not hold the layout's tables or columns (never loaded, or loaded
    /// from another workspace).
    #[error(
        "{engine}: {reason} (the engine's `profiles` and `events` are not this workspace's: \
         put them there with `microseg warehouse load --engine {engine}`, or make views in \
         the layout, docs/warehouse.md)"
    )]
    NotLoaded {
        /// `postgres`, `duckdb` or `spark`.
        engine: &'static str,
        /// The engine's message.
        reason: String,
    },
    /// The condition cannot be compiled to SQL.
    #[error(transparent)]
    Condition(#[from] microseg_engine::EvalError),
    /// The condition names a trait the SQL layout leaves out.
    #[error(
        "trait '{0}' is not in the SQL layout: its name is a layout column (id, merged_into) \
         or differs from another trait's only in case, which DuckDB and Spark do not tell \
         apart (docs/warehouse.md)"
    )]
    LeftOut(String),
    /// No saved segment has this name.
    #[error("no saved segment '{0}' (warehouse run takes saved segments)")]
    UnknownSegment(String),
    /// The engine returned ids that are not this workspace's profiles.
    #[error(
        "{engine}: segment '{segment}' returned {count} ids that are not profiles of this \
         workspace: load the workspace's data with `microseg warehouse load --engine {engine}`"
    )]
    UnknownIds {
        /// `postgres`, `duckdb` or `spark`.
        engine: &'static str,
        /// The segment.
        segment: String,
        /// How many.
        count: u64,
    },
    /// Compiling or running one segment failed.
    #[error("segment '{segment}': {source}")]
    Segment {
        /// The segment.
        segment: String,
        /// Why.
        source: Box<WarehouseError>,
    },
}

/// A warehouse engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL.
    Postgres,
    /// DuckDB.
    DuckDb,
    /// Apache Spark, through Spark Connect.
    Spark,
}

impl Engine {
    /// The engine called `name`, or a message naming the ones there are.
    pub fn from_name(name: &str) -> Result<Engine, String> {
        match name {
            "postgres" => Ok(Engine::Postgres),
            "duckdb" => Ok(Engine::DuckDb),
            "spark" => Ok(Engine::Spark),
            other => Err(format!(
                "unknown warehouse engine '{other}' (use postgres, duckdb or spark)"
            )),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        self.dialect().name()
    }

    /// The SQL dialect it runs.
    pub fn dialect(self) -> Dialect {
        match self {
            Engine::Postgres => Dialect::Postgres,
            Engine::DuckDb => Dialect::DuckDb,
            Engine::Spark => Dialect::Spark,
        }
    }
}

/// An open connection to an engine.
pub trait Session {
    /// Runs `sql` (one `SELECT` with the ids in its first column) and returns the ids.
    fn ids(&mut self, sql: &str) -> Result<Vec<String>, WarehouseError>;
}

/// Opens `engine` as configured in the workspace's `microseg.toml`.
pub fn connect(ws: &Workspace, engine: Engine) -> Result<Box<dyn Session>, WarehouseError> {
    let section = &ws.config.warehouse;
    Ok(match engine {
        Engine::Postgres => Box::new(open_postgres(ws)?),
        Engine::DuckDb => {
            let c = configured(engine, section.duckdb.as_ref())?;
            Box::new(duckdb::DuckDb::new(
                &ws.dir.join(&c.file),
                c.cli.as_deref(),
                true,
            ))
        }
        Engine::Spark => Box::new(open_spark(
            configured(engine, section.spark.as_ref())?,
            false,
        )?),
    })
}

/// The `[warehouse.ENGINE]` section, or an error saying how to write one.
fn configured<T>(engine: Engine, section: Option<&T>) -> Result<&T, WarehouseError> {
    section.ok_or_else(|| {
        let example = match engine {
            Engine::Postgres => "url = \"postgres://user@host:5432/db\"",
            Engine::DuckDb => "file = \"warehouse.duckdb\"",
            Engine::Spark => "url = \"sc://host:15002\"",
        };
        WarehouseError::Config(format!(
            "no [warehouse.{}] section (add one, e.g. {example}; docs/warehouse.md)",
            engine.name()
        ))
    })
}

/// A connection to the configured PostgreSQL.
fn open_postgres(ws: &Workspace) -> Result<postgres::Postgres, WarehouseError> {
    let c = configured(Engine::Postgres, ws.config.warehouse.postgres.as_ref())?;
    postgres::Postgres::connect(
        &c.url,
        c.schema.as_deref(),
        c.ca_file.as_ref().map(|f| ws.dir.join(f)).as_deref(),
    )
}

/// A session on the configured Spark, in its `database` when one is named (created
/// first when `create`).
fn open_spark(
    c: &microseg_store::workspace::SparkWarehouse,
    create: bool,
) -> Result<spark::Spark, WarehouseError> {
    let mut spark = spark::Spark::connect(&c.url)?;
    if let Some(database) = &c.database {
        spark.use_database(database, create)?;
    }
    Ok(spark)
}

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loaded {
    /// Rows of `profiles`.
    pub profiles: u64,
    /// Rows of `events`.
    pub events: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// Puts the workspace's data into `engine` as `profiles` and `events`, replacing what a
/// previous load put there; `progress` counts the rows read.
pub fn load(
    ws: &Workspace,
    store: &Store,
    engine: Engine,
    progress: &dyn Progress,
) -> Result<Loaded, WarehouseError> {
    let start = Instant::now();
    let section = &ws.config.warehouse;
    let (profiles, events) = match engine {
        Engine::Postgres => open_postgres(ws)?.load(store, progress)?,
        Engine::DuckDb => {
            let c = configured(engine, section.duckdb.as_ref())?;
            // The tables are copied into the database file: the Parquet files are only
            // the way there.
            let stage = ws.dir.join("warehouse-load.tmp");
            let exported = export(store, &stage, progress)?;
            let loaded =
                duckdb::DuckDb::new(&ws.dir.join(&c.file), c.cli.as_deref(), false).load(&stage);
            let _ = std::fs::remove_dir_all(&stage);
            loaded?;
            (exported.profiles, exported.events)
        }
        Engine::Spark => {
            let c = configured(engine, section.spark.as_ref())?;
            // Without `stage`, a directory in the workspace: right for a Spark on this
            // machine; a cluster elsewhere needs a directory it can read.
            let stage = ws
                .dir
                .join(c.stage.as_deref().unwrap_or(Path::new("warehouse-spark")));
            let exported = export(store, &stage, progress)?;
            let uri = match &c.stage_uri {
                Some(uri) => uri.clone(),
                None => absolute(&stage)?,
            };
            // Connected after the export, which can take minutes: an idle connection
            // could be closed on the way.
            open_spark(c, true)?.load(&uri)?;
            (exported.profiles, exported.events)
        }
    };
    Ok(Loaded {
        profiles,
        events,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn absolute(path: &Path) -> Result<String, WarehouseError> {
    let path = std::fs::canonicalize(path).map_err(|e| WarehouseError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(path.display().to_string())
}
