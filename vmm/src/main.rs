fn main() {
    std::process::exit(preemptor::cli::main());
}
