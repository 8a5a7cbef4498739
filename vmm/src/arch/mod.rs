//! Architecture support. Only x86_64 guests exist.
pub mod x86_64;
