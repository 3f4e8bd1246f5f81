//! The `wshub` binary: everything lives in the library's `cli` module, so
//! the binary and an embedding program run the same hub.

fn main() -> std::process::ExitCode {
    wshub::cli::main()
}
