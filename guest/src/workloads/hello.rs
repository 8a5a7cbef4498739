//! Smallest workload: one line, success. For boot checks and benchmarks.
pub fn main() {
    println!("hello from the preemptor guest");
}
