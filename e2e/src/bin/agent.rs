//! The node agent program for the end-to-end suite: `node-agent`'s own main.

fn main() -> std::process::ExitCode {
    node_agent::cli::main()
}
