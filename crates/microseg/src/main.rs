//! The `microseg` binary: parses the command line, runs one command, and turns the
//! outcome into an exit code in one place.

mod commands;
mod failure;
mod output;
mod progress;

use clap::Parser;

/// mimalloc instead of the system allocator: the server allocates a request's strings on
/// one thread and frees them on another, where glibc's allocator is slow; `bench/load.py`
/// ran 141,000 events/s with it against 106,000 with glibc (medians of 3 interleaved runs,
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Like other command-line tools, stop quietly when the reader of our output goes
    // away (`microseg metrics | head`) instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists; restoring the default
    // action of SIGPIPE has no other effect on the program.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = commands::Cli::parse();
    if let Err(err) = commands::run(cli) {
        // One line: what went wrong and where; the exit code says what kind of failure
        // (failure.rs).
        eprintln!("error: {}", failure::one_line(&err));
        std::process::exit(failure::exit_code(&err));
    }
}
