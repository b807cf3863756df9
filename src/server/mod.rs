//! Building blocks of the OAuth 2.1 authorization server (feature `server`).
//!
//! This release ships the parts every endpoint of the coming router stands on: the
//! [`SigningKeys`] and [`EncryptionKeys`] rings (separate purposes, each key with an id) and
//! the canonical [`PublicUrls`] builder. State goes through [`crate::store::Store`].

mod keys;
mod urls;

pub use self::keys::{EncryptionKeys, RingValidator, SealError, SigningKeys};
pub use self::urls::PublicUrls;
