//! The toy model program for the end-to-end suite: `switchyard-toy-model`'s
//! own main.

fn main() -> std::process::ExitCode {
    switchyard_toy_model::main()
}
