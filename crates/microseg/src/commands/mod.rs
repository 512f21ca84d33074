//! Every `microseg` command: one clap enum, one dispatch match, a module per command.

mod bench;
mod campaign;
mod cluster;
mod clv;
mod correlate;
mod demo;
mod discover;
mod experiment;
mod export;
mod import;
mod init;
mod load;
mod metrics;
mod profile;
mod report;
mod segment;
mod serve;
mod warehouse;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use microseg_core::time::parse_timestamp;
use microseg_core::Timestamp;
use microseg_store::{Store, Workspace};

/// microseg: micro-segmentation and personalisation for marketing teams.
///
/// Load customer profiles and events, compute behavioural metrics (visits, orders,
/// revenue, recency, RFM), and cut customers into precise segments.
/// Start with `microseg demo`.
#[derive(Debug, Parser)]
#[command(name = "microseg", version, max_term_width = 100)]
pub struct Cli {
    /// The workspace directory.
    #[arg(
        long,
        global = true,
        env = "MICROSEG_DATA",
        hide_env_values = true,
        default_value = "./microseg-data",
        value_name = "DIR"
    )]
    data: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Init(init::InitArgs),
    #[command(subcommand)]
    Import(import::ImportCommand),
    Metrics(metrics::MetricsArgs),
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    Prune(profile::PruneArgs),
    #[command(subcommand)]
    Segment(segment::SegmentCommand),
    Correlate(correlate::CorrelateArgs),
    #[command(subcommand)]
    Clv(clv::ClvCommand),
    Cluster(cluster::ClusterArgs),
    Discover(discover::DiscoverArgs),
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
    Demo(demo::DemoArgs),
    Generate(demo::GenerateArgs),
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    Serve(serve::ServeArgs),
    #[command(subcommand)]
    Key(serve::KeyCommand),
    #[command(subcommand)]
    Campaign(campaign::CampaignCommand),
    Decide(campaign::DecideArgs),
    #[command(subcommand)]
    Suppress(campaign::SuppressCommand),
    #[command(subcommand)]
    Export(export::ExportCommand),
    Deliver(campaign::DeliverArgs),
    Report(report::ReportArgs),
    #[command(subcommand)]
    Warehouse(warehouse::WarehouseCommand),
}

/// Runs the command.
pub fn run(cli: Cli) -> Result<()> {
    let ctx = Context { data: cli.data };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Import(cmd) => import::run(&ctx, cmd),
        Command::Metrics(args) => metrics::run(&ctx, args),
        Command::Profile(cmd) => profile::run(&ctx, cmd),
        Command::Prune(args) => profile::prune(&ctx, args),
        Command::Segment(cmd) => segment::run(&ctx, cmd),
        Command::Correlate(args) => correlate::run(&ctx, args),
        Command::Clv(cmd) => clv::run(&ctx, cmd),
        Command::Cluster(args) => cluster::run(&ctx, args),
        Command::Discover(args) => discover::run(&ctx, args),
        Command::Experiment(cmd) => experiment::run(&ctx, cmd),
        Command::Demo(args) => demo::run(&ctx, args),
        Command::Generate(args) => demo::run_generate(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Serve(args) => serve::run(&ctx, args),
        Command::Key(cmd) => serve::run_key(&ctx, cmd),
        Command::Campaign(cmd) => campaign::run_command(&ctx, cmd),
        Command::Decide(args) => campaign::decide(&ctx, args),
        Command::Suppress(cmd) => campaign::suppress(&ctx, cmd),
        Command::Export(cmd) => export::run(&ctx, cmd),
        Command::Deliver(args) => campaign::deliver(&ctx, args),
        Command::Report(args) => report::run(&ctx, args),
        Command::Warehouse(cmd) => warehouse::run(&ctx, cmd),
    }
}

/// What every command knows: where the workspace is.
pub struct Context {
    data: PathBuf,
}

impl Context {
    /// Opens the workspace and its store.
    fn open(&self) -> Result<(Workspace, Store)> {
        let ws = Workspace::open(&self.data)?;
        let store =
            Store::open(&ws).with_context(|| format!("opening {}", ws.store_path().display()))?;
        Ok((ws, store))
    }

    /// Opens the workspace and its store with the writer lock held (for commands that
    /// write profiles or events; refused while `microseg serve` runs on it).
    fn open_for_writing(
        &self,
        who: &str,
    ) -> Result<(Workspace, Store, microseg_store::workspace::WriterLock)> {
        let ws = Workspace::open(&self.data)?;
        let lock = ws.lock_writer(who)?;
        let store =
            Store::open(&ws).with_context(|| format!("opening {}", ws.store_path().display()))?;
        Ok((ws, store, lock))
    }
}

/// Reads `--as-of`: `YYYY-MM-DD` (midnight UTC) or RFC 3339; the clock when absent.
fn as_of(value: Option<&str>) -> Result<Timestamp> {
    match value {
        Some(text) => Ok(parse_timestamp(text).with_context(|| "--as-of")?),
        None => Ok(Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64,
        )),
    }
}

/// Prints one JSON document on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
