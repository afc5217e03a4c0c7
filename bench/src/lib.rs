//! Shared pieces of the benchmark tools: flags, keys, packets and the few syscalls they batch.

pub mod args;
pub mod keys;
pub mod packet;
pub mod sys;
pub mod tunn;
