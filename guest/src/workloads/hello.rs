//! Smallest workload: one line, success. For boot checks and benchmarks.
pub fn main() {
    let seed = crate::ready();
    println!("hello from the preemptor guest (seed {seed})");
}
