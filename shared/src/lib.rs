//! The model Assent's server and web front end share: request and response
//! types, the status machine, and validation of Matrix IDs and third-party
//! identifiers. No I/O, so it builds for wasm32 as well as natively.

pub mod admin;
pub mod api;
pub mod i18n;
pub mod ids;
pub mod status;

pub use api::*;
pub use ids::{case_fold, mxid_server_name, Medium, ThreePid, ValidationError};
pub use status::{Initiator, RequestStatus};
