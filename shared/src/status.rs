//! The life of a request: `Pending → Approved | Denied | Expired | Cancelled`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a held unbind request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for the owner of the address.
    Pending,
    /// The owner approved: the unbind is carried out.
    Approved,
    /// The owner denied: nothing is unbound.
    Denied,
    /// Nobody decided in time: counts as no consent, nothing is unbound.
    Expired,
    /// Withdrawn by an administrator or the system: nothing is unbound.
    Cancelled,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 5] = [
        RequestStatus::Pending,
        RequestStatus::Approved,
        RequestStatus::Denied,
        RequestStatus::Expired,
        RequestStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Expired => "expired",
            RequestStatus::Cancelled => "cancelled",
        }
    }

    /// Only a pending request can change, and only to one of the final states.
    pub fn can_become(self, next: RequestStatus) -> bool {
        self == RequestStatus::Pending && next != RequestStatus::Pending
    }

    pub fn is_final(self) -> bool {
        self != RequestStatus::Pending
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue(pub String);

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown value `{}`", self.0)
    }
}

impl std::error::Error for UnknownValue {}

impl FromStr for RequestStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// Who started the unbind, as far as Assent knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// The account's owner removed the address themselves.
    User,
    /// A homeserver administrator.
    Admin,
    /// The account is being deactivated.
    Deactivation,
    /// The homeserver did not say (the usual case for gateway intake).
    Unknown,
}

impl Initiator {
    pub const ALL: [Initiator; 4] = [
        Initiator::User,
        Initiator::Admin,
        Initiator::Deactivation,
        Initiator::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::User => "user",
            Initiator::Admin => "admin",
            Initiator::Deactivation => "deactivation",
            Initiator::Unknown => "unknown",
        }
    }
}

impl FromStr for Initiator {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Initiator::ALL
            .into_iter()
            .find(|initiator| initiator.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_moves_and_only_to_a_final_state() {
        for from in RequestStatus::ALL {
            for to in RequestStatus::ALL {
                let expected = from == RequestStatus::Pending && to != RequestStatus::Pending;
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn status_names_round_trip_through_text_and_json() {
        for status in RequestStatus::ALL {
            assert_eq!(status.as_str().parse::<RequestStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert!("approve".parse::<RequestStatus>().is_err());
        for initiator in Initiator::ALL {
            assert_eq!(initiator.as_str().parse::<Initiator>(), Ok(initiator));
        }
    }
}
