//! Every change to a request's state, in one place: holding it, minting and
//! renewing its consent link, deciding it (approve, deny, cancel, expire)
//! and signing that decision. Handlers and workers call these; nothing else
//! writes a request's status, signs a decision or mints a token.
//!
//! ```text
//!             hold                     decide (one guarded write)
//! (intake) ─────────► pending ──┬── approve / deny (owner) ──► relay rows
//!                       │       ├── cancel (administrator) ──► webhook rows
//!        renew_link ◄───┘       └── expire (time ran out) ───► webhook rows
//! ```
//!
//! A transition is allowed only from `pending`
//! ([`RequestStatus::can_become`](assent_shared::RequestStatus::can_become)),
//! and storage makes the first decision win. A decision asked for after the
//! request's time ran out records the expiry instead, in the same call.

mod decide;
pub mod document;
mod hold;
pub mod jobs;
mod link;
pub mod relay_rows;
pub mod retention;

pub use decide::{decide, expire_due, By, DecideError, Outcome, Via};
pub use hold::{
    created, hold, new_request_id, prepare, record_owner_proven, Held, Prepared, Proven, ToHold,
};
pub use link::{email_outbox, mint, renew_link, Link};
