//! `switchyard`: call services and inspect the fleet through a gateway (see
//! `switchyard_cli`).

fn main() -> std::process::ExitCode {
    switchyard_cli::main()
}
