//! DuckDB through its command-line shell: the SQL on standard input, the ids back as CSV.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use microseg_store::sql::Dialect;

use crate::{Session, WarehouseError};

/// A DuckDB database file and the shell that opens it.
pub struct DuckDb {
    file: PathBuf,
    cli: PathBuf,
    read_only: bool,
}

impl DuckDb {
    /// `file` opened by `cli` (default `duckdb` on the `PATH`).
    pub fn new(file: &Path, cli: Option<&Path>, read_only: bool) -> DuckDb {
        DuckDb {
            file: file.to_path_buf(),
            cli: cli.map_or_else(|| PathBuf::from("duckdb"), Path::to_path_buf),
            read_only,
        }
    }

    /// Runs `sql` and returns what it printed as CSV without a header.
    pub fn run(&self, sql: &str) -> Result<String, WarehouseError> {
        let mut cmd = Command::new(&self.cli);
        cmd.args(["-batch", "-bail", "-no-init", "-csv", "-noheader"]);
        if self.read_only {
            cmd.arg("-readonly");
        }
        let mut child = cmd
            .arg(&self.file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| WarehouseError::Connect {
                engine: "duckdb",
                target: self.cli.display().to_string(),
                reason: format!(
                    "{e} (install the DuckDB CLI, or set [warehouse.duckdb] cli = \"/path/to/duckdb\")"
                ),
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = format!("{sql};\n");
        // Written from a thread: the shell prints while it reads.
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child
            .wait_with_output()
            .map_err(|e| WarehouseError::Engine {
                engine: "duckdb",
                reason: e.to_string(),
            })?;
        let _ = writer.join();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(WarehouseError::Engine {
                engine: "duckdb",
                reason: format!("{}: {}", self.file.display(), err.trim()),
            });
        }
        String::from_utf8(out.stdout).map_err(|e| WarehouseError::Engine {
            engine: "duckdb",
            reason: format!("output is not UTF-8: {e}"),
        })
    }

    /// Replaces `profiles` and `events` with the Parquet files in `dir`.
    pub fn load(&self, dir: &Path) -> Result<(), WarehouseError> {
        let file = |name: &str| Dialect::DuckDb.string(&dir.join(name).display().to_string());
        self.run(&format!(
            "BEGIN; CREATE OR REPLACE TABLE profiles AS SELECT * FROM read_parquet({});\n\
             CREATE OR REPLACE TABLE events AS SELECT * FROM read_parquet({}) ORDER BY profile_id, time;\n\
             COMMIT",
            file("profiles.parquet"),
            file("events.parquet")
        ))?;
        Ok(())
    }
}

impl Session for DuckDb {
    fn ids(&mut self, sql: &str) -> Result<Vec<String>, WarehouseError> {
        let out = self.run(sql)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(out.as_bytes());
        reader
            .records()
            .map(|r| {
                r.map(|r| r.get(0).unwrap_or_default().to_string())
                    .map_err(|e| WarehouseError::Engine {
                        engine: "duckdb",
                        reason: format!("unreadable output: {e}"),
                    })
            })
            .collect()
    }
}
