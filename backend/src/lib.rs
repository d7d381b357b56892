//! Assent's server: holds homeserver-signed 3PID unbinds at the identity
//! server's door until the owner of the address decides.

pub mod admin;
pub mod api;
pub mod app;
pub mod client;
pub mod config;
pub mod consent;
pub mod decision;
pub mod demo;
pub mod email;
pub mod errors;
pub mod intake;
pub mod keys;
pub mod metrics;
pub mod outbox;
pub mod ratelimit;
pub mod relay;
pub mod serve;
pub mod storage;
pub mod tokens;
pub mod web;
