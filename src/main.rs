//! The `peat-gateway` binary: command-line parsing and dispatch.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
