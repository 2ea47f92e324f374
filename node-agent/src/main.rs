//! `node-agent --config agent.toml`: runs a Switchyard node agent until
//! Ctrl-C or SIGTERM (see `node_agent::cli`).

fn main() -> std::process::ExitCode {
    node_agent::cli::main()
}
