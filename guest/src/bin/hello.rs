//! Smallest workload: one line, success. For boot checks and benchmarks.
fn main() {
    println!("hello from the preemptor guest");
}
