//! `sesame-agent`: parses the command line and runs it (all logic in the library).

fn main() {
    std::process::exit(sesame_agent::cli::main());
}
