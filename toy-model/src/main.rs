//! `switchyard-toy-model`: a stand-in model server (see the library).

fn main() -> std::process::ExitCode {
    switchyard_toy_model::main()
}
