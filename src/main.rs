//! The `wshub` binary: the command line (`cli`) over the library. The
//! library runs the hub; the binary parses flags, installs the log
//! subscriber, and decides the exit status.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
