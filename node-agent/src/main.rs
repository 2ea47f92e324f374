//! `node-agent --config agent.toml`: runs a Switchyard node agent until
//! Ctrl-C or SIGTERM (see `switchyard_agent::cli`).

fn main() -> std::process::ExitCode {
    switchyard_agent::cli::main()
}
