//! Versioned record codec: one version byte, then postcard.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// A value stored in a table. Bump `VERSION` when the layout changes and add a migration.
pub trait Record: Serialize + DeserializeOwned {
    const KIND: &'static str;
    const VERSION: u8;

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![Self::VERSION];
        postcard::to_io(self, &mut out).map_err(|_| StoreError::Encode { kind: Self::KIND })?;
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let (&version, body) = bytes.split_first().ok_or(StoreError::Decode {
            kind: Self::KIND,
            reason: "empty value",
        })?;
        if version != Self::VERSION {
            return Err(StoreError::Decode {
                kind: Self::KIND,
                reason: "unknown record version (migration missing)",
            });
        }
        let (value, rest) = postcard::take_from_bytes(body).map_err(|_| StoreError::Decode {
            kind: Self::KIND,
            reason: "malformed body",
        })?;
        if !rest.is_empty() {
            return Err(StoreError::Decode {
                kind: Self::KIND,
                reason: "trailing bytes",
            });
        }
        Ok(value)
    }
}
