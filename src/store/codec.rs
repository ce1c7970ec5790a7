//! Versioned record codec: one version byte, then postcard.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// A value stored in a table. Bump `VERSION` when the layout changes and add a migration.
pub trait Record: Serialize + DeserializeOwned {
    const KIND: &'static str;
    const VERSION: u8;

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        self.encode_after(0)
    }

    /// The encoding after `room` zero bytes the caller fills in (a prefix of the stored value).
    fn encode_after(&self, room: usize) -> Result<Vec<u8>, StoreError> {
        // `to_extend` appends byte strings whole (`to_io` wrote them a byte at a time).
        let mut out = Vec::with_capacity(room + self.size_hint());
        out.resize(room, 0);
        out.push(Self::VERSION);
        postcard::to_extend(self, out).map_err(|_| StoreError::Encode { kind: Self::KIND })
    }

    /// About the encoded size, so encoding allocates once (a record growing byte by byte
    /// reallocates at every doubling).
    fn size_hint(&self) -> usize {
        64
    }

    /// Decodes the current version; a record with older versions overrides this and reads
    /// them through [`decode_body`].
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        decode_current(bytes)
    }
}

/// The current version of `R`, refusing any other.
pub fn decode_current<R: Record>(bytes: &[u8]) -> Result<R, StoreError> {
    let (&version, body) = bytes.split_first().ok_or(StoreError::Decode {
        kind: R::KIND,
        reason: "empty value",
    })?;
    if version != R::VERSION {
        return Err(StoreError::Decode {
            kind: R::KIND,
            reason: "unknown record version (migration missing)",
        });
    }
    decode_body(R::KIND, body)
}

/// A postcard body with nothing after it.
pub fn decode_body<T: DeserializeOwned>(kind: &'static str, body: &[u8]) -> Result<T, StoreError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|_| StoreError::Decode {
        kind,
        reason: "malformed body",
    })?;
    if !rest.is_empty() {
        return Err(StoreError::Decode {
            kind,
            reason: "trailing bytes",
        });
    }
    Ok(value)
}
