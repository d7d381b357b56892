//! Assent's server: holds homeserver-signed 3PID unbinds at the identity
//! server's door until the owner of the address decides.
//!
//! The modules, from the top down (`docs/architecture.md` has the map and
//! the walk of one unbind through them):
//!
//! - start and routing: [`serve`], [`app`];
//! - the areas, each with its router: [`intake`] (homeservers and identity
//!   servers), [`consent`] (the owner), [`admin`] (administrators),
//!   [`api`] and [`pages`] (keys, health, metrics, the front end);
//! - what changes a request's state: [`lifecycle`], and the [`workers`]
//!   that carry out what each change queued (email, relay, expiry);
//! - what those share: [`state`], [`homeserver_keys`], [`email`],
//!   [`bearer`], [`client`], [`metrics`], [`assets`], [`demo`];
//! - the floor: [`storage`], [`config`], [`keys`], [`tokens`],
//!   [`ratelimit`], [`errors`].

pub mod admin;
pub mod api;
pub mod app;
pub mod assets;
pub mod bearer;
pub mod client;
pub mod config;
pub mod consent;
pub mod demo;
pub mod email;
pub mod errors;
pub mod homeserver_keys;
pub mod intake;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod pages;
#[cfg(test)]
mod properties;
pub mod ratelimit;
pub mod serve;
pub mod state;
pub mod storage;
#[cfg(test)]
pub(crate) mod test_support;
pub mod tokens;
pub mod workers;
