//! Fixtures shared by the test binaries (`plain`, `postgres`, `root`): each binary declares
//! `mod common;` once and uses what it needs.
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod audit_events;
pub mod browser;
pub mod cli;
pub mod config;
pub mod curl;
pub mod durability;
pub mod harness;
pub mod metrics;
pub mod need;
pub mod netns;
pub mod portal;
pub mod portal_process;
pub mod postgres;
pub mod radius;
pub mod serve;
pub mod slapd;
pub mod steps;
pub mod store_db;
pub mod traffic;
pub mod wg;
pub mod world;
