//! The `firempo` command line.

fn main() -> std::process::ExitCode {
    firempo::cli::main()
}
