//! Intake: what homeservers and identity servers send.
//!
//! - `gateway`: the two unbind routes, reached under the identity server's name;
//! - `xmatrix`, `signature_batch`, `server_keys`, `key_fetch`: the homeserver's
//!   signature (checked in batches) and keys;
//! - `body`: the unbind body;
//! - `upstream`: forwarding to the real identity server and the binding check;
//! - `hold`: storing a held request with its email;
//! - `passthrough`: `proxy_all`;
//! - `integrated`: `POST /_assent/v1/requests` for identity servers that call Assent.

pub mod body;
pub mod gateway;
pub mod hold;
pub mod integrated;
pub mod key_fetch;
pub mod passthrough;
pub mod server_keys;
pub mod signature_batch;
#[cfg(test)]
pub(crate) mod tests;
pub mod upstream;
pub mod xmatrix;
