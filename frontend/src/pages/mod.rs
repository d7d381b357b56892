pub mod consent;
pub mod home;
pub mod not_found;
