//! `wshub bench`: drives a hub with many subscribers and measures it.

use std::process::ExitCode;

use clap::Args;

/// Settings of a benchmark run.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The hub's base URL, e.g. http://127.0.0.1:8000 (default: start one in-process)
    #[arg(long)]
    url: Option<String>,
}

/// Runs a benchmark and prints its report.
pub(crate) fn run(args: BenchArgs) -> ExitCode {
    eprintln!("wshub bench is not built yet ({args:?})");
    ExitCode::FAILURE
}
