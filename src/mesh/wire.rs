//! Strict little-endian cursor and writer shared by the format codecs.

use super::MeshError;

/// Reads fields front to back; every read checks the remaining length first.
pub(crate) struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Self { what, buf, pos: 0 }
    }

    /// A reader over `buf`, refusing input shorter than the format's minimum up front.
    pub(crate) fn at_least(
        what: &'static str,
        buf: &'a [u8],
        min: usize,
    ) -> Result<Self, MeshError> {
        if buf.len() < min {
            return Err(MeshError::TooShort {
                what,
                total: buf.len(),
                min,
            });
        }
        Ok(Self::new(what, buf))
    }

    /// The subject key, `mesh_id` and `node_id` that certificates and requests both begin with.
    pub(crate) fn subject_and_ids(&mut self) -> Result<([u8; 32], String, String), MeshError> {
        let subject = self.array()?;
        let mesh_id = self.str_u8("mesh_id")?.to_owned();
        let node_id = self.str_u8("node_id")?.to_owned();
        Ok((subject, mesh_id, node_id))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], MeshError> {
        let remaining = self.buf.len() - self.pos;
        if n > remaining {
            return Err(MeshError::Truncated {
                what: self.what,
                offset: self.pos,
                need: n - remaining,
                len: self.buf.len(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], MeshError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, MeshError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, MeshError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, MeshError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A string prefixed by a u16 byte length.
    pub(crate) fn str_u16(&mut self, field: &'static str) -> Result<&'a str, MeshError> {
        let n = usize::from(self.u16()?);
        let raw = self.bytes(n)?;
        std::str::from_utf8(raw).map_err(|_| MeshError::InvalidUtf8 {
            what: self.what,
            field,
        })
    }

    /// A string prefixed by a u8 byte length.
    pub(crate) fn str_u8(&mut self, field: &'static str) -> Result<&'a str, MeshError> {
        let n = usize::from(self.u8()?);
        let raw = self.bytes(n)?;
        std::str::from_utf8(raw).map_err(|_| MeshError::InvalidUtf8 {
            what: self.what,
            field,
        })
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), MeshError> {
        let extra = self.buf.len() - self.pos;
        if extra == 0 {
            Ok(())
        } else {
            Err(MeshError::TrailingBytes {
                what: self.what,
                extra,
            })
        }
    }
}

/// Appends a u16-length-prefixed string, refusing lengths the prefix cannot hold.
pub(crate) fn put_str_u16(
    out: &mut Vec<u8>,
    what: &'static str,
    field: &'static str,
    s: &str,
) -> Result<(), MeshError> {
    let len = u16::try_from(s.len()).map_err(|_| MeshError::TooLong {
        what,
        field,
        len: s.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends a u8-length-prefixed string, refusing anything over 255 bytes (never wraps).
pub(crate) fn put_str_u8(
    out: &mut Vec<u8>,
    what: &'static str,
    field: &'static str,
    s: &str,
) -> Result<(), MeshError> {
    let len = u8::try_from(s.len()).map_err(|_| MeshError::TooLong {
        what,
        field,
        len: s.len(),
        max: usize::from(u8::MAX),
    })?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends u16-length-prefixed bytes.
pub(crate) fn put_bytes_u16(
    out: &mut Vec<u8>,
    what: &'static str,
    field: &'static str,
    b: &[u8],
) -> Result<(), MeshError> {
    let len = u16::try_from(b.len()).map_err(|_| MeshError::TooLong {
        what,
        field,
        len: b.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_with_offset() {
        let mut r = Reader::new("t", &[1, 2, 3]);
        assert_eq!(r.u16().unwrap(), 0x0201);
        let err = r.u16().unwrap_err();
        assert_eq!(
            err,
            MeshError::Truncated {
                what: "t",
                offset: 2,
                need: 1,
                len: 3
            }
        );
    }

    #[test]
    fn reader_refuses_trailing_bytes() {
        let mut r = Reader::new("t", &[1, 2]);
        r.u8().unwrap();
        assert_eq!(
            r.finish(),
            Err(MeshError::TrailingBytes {
                what: "t",
                extra: 1
            })
        );
    }

    #[test]
    fn writer_refuses_strings_over_u16() {
        let long = "x".repeat(70_000);
        let mut out = Vec::new();
        assert!(matches!(
            put_str_u16(&mut out, "t", "name", &long),
            Err(MeshError::TooLong { len: 70_000, .. })
        ));
        assert!(out.is_empty());
    }
}
