//! The `switchyard` program for the end-to-end suite's tests of what it
//! prints: `switchyard-e2e-cli --gateway ADDR --ca CA nodes`, the same
//! program as `switchyard` (`switchyard_cli::main`).

fn main() -> std::process::ExitCode {
    cli::main()
}
