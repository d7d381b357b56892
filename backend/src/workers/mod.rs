//! The background work that follows a state change, each from the rows the
//! change wrote in its transaction: so a crash loses nothing, and several
//! replicas share the work through leases.
//!
//! - [`email`] sends the owner the consent link ([`OutboxKind::Email`] rows).
//! - [`relay`] carries a decision to the identity server and the webhooks
//!   ([`OutboxKind::Relay`] rows).
//! - [`expiry`] records `expire` on pending requests whose time ran out.
//! - [`retention`] deletes the personal data of requests that ended
//!   `retention` ago.
//!
//! [`OutboxKind::Email`]: crate::storage::OutboxKind::Email
//! [`OutboxKind::Relay`]: crate::storage::OutboxKind::Relay

pub mod email;
pub mod expiry;
pub mod relay;
pub mod retention;
