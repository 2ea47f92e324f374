//! The gateway program for the end-to-end suite's chaos scenarios, which
//! kill it (kill -9) or read its memory (`/proc/PID/status`):
//! `switchyard-e2e-gateway --config gateway.toml`, the same program as
//! `gateway` (`gateway::cli::main`).

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
