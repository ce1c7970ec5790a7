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
        let mut out = Vec::with_capacity(room + self.size_hint());
        out.resize(room, 0);
        out.push(Self::VERSION);
        postcard::serialize_with_flavor(self, Append(out))
            .map_err(|_| StoreError::Encode { kind: Self::KIND })
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

/// Postcard output appended to a `Vec` a slice at a time. `to_extend` goes through `Extend`,
/// which at `opt-level = "z"` copies byte by byte: a fifth of ingest's request-side CPU.
struct Append(Vec<u8>);

impl postcard::ser_flavors::Flavor for Append {
    type Output = Vec<u8>;

    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }

    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(b);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Sample {
        name: String,
        #[serde(with = "serde_bytes")]
        data: Option<Vec<u8>>,
        hash: [u8; 32],
        n: u64,
    }

    impl Record for Sample {
        const KIND: &'static str = "sample";
        const VERSION: u8 = 3;
    }

    #[test]
    fn records_encode_as_postcard_after_the_room_and_version() {
        let s = Sample {
            name: "tracks".into(),
            data: Some(vec![7; 300]),
            hash: [9; 32],
            n: u64::MAX,
        };
        let mut want = vec![0u8; 8];
        want.push(3);
        want.extend_from_slice(&postcard::to_allocvec(&s).unwrap());
        assert_eq!(s.encode_after(8).unwrap(), want);
        assert_eq!(Sample::decode(&s.encode().unwrap()).unwrap(), s);
    }
}
