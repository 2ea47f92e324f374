//! `gateway [--config gateway.toml]`: runs a Switchyard gateway until Ctrl-C
//! or SIGTERM; `gateway cert issue --node ID --out DIR` issues an agent's
//! client certificate (see `switchyard_gateway::cli`).

fn main() -> std::process::ExitCode {
    switchyard_gateway::cli::main()
}
