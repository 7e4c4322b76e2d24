//! The registration tokens still waiting for a device (for the web console's token list).

use super::{blocking, Registry, Store};
use crate::error::BackendError;

/// The query both stores run (`?1` = now; PostgreSQL's `$1` is put in by its store).
pub(super) const SELECT_UNUSED: &str = "SELECT token_hash, created_at, expires_at, bound_device_id
     FROM tokens WHERE used_at IS NULL AND expires_at > ?1 ORDER BY expires_at, token_hash
     LIMIT 500";

/// A token neither used nor expired. The token itself is unknown here (only its SHA-256 is
/// stored), so this can be listed but never handed out again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusedToken {
    /// The token's SHA-256, lowercase hex (its name in lists; show only a prefix).
    pub hash: String,
    /// When it was minted, Unix seconds.
    pub created_at: i64,
    /// When it expires, Unix seconds.
    pub expires_at: i64,
    /// The device id it is bound to, if any.
    pub bound_device_id: Option<String>,
}

impl Registry {
    /// Tokens neither used nor expired at `now` (Unix seconds), soonest expiry first, at
    /// most 500.
    pub async fn unused_tokens(&self, now: i64) -> Result<Vec<UnusedToken>, BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let s = s.clone();
                blocking(move || s.unused_tokens(now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.unused_tokens(now).await,
        }
    }
}
