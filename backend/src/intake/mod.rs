//! Intake: what homeservers send. So far, the checks every held request
//! passes: the `X-Matrix` signature and the homeserver's signing keys.

pub mod key_fetch;
pub mod server_keys;
pub mod xmatrix;
