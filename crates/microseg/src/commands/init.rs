//! `microseg init`: create a workspace.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use microseg_store::Workspace;

use super::Context;

/// Create a workspace: a directory with a config, the durable store and logs.
///
/// Without DIR, creates the workspace named by --data / MICROSEG_DATA. Running it on an
/// existing workspace changes nothing.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to create the workspace (default: --data).
    dir: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: InitArgs) -> Result<()> {
    let dir = args.dir.unwrap_or_else(|| ctx.data.clone());
    let (ws, created) = Workspace::init(&dir)?;
    if created {
        println!("created workspace {}", ws.dir.display());
    } else {
        println!("workspace {} already exists", ws.dir.display());
    }
    Ok(())
}
