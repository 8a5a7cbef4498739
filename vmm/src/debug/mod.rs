//! Guest debugging: symbols and sites of the guest kernel, guest state at
//! a breakpoint hit.
pub mod stack;
pub mod symbolize;
pub mod symbols;
