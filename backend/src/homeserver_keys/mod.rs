//! Homeservers' signing keys: fetched (with server discovery, through an
//! address guard) and cached, checked against their own signature, and the
//! signatures of unbinds checked with them in batches.

pub mod key_fetch;
mod resolver;
pub mod server_keys;
pub mod signature_batch;
