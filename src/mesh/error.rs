//! Errors of the Peat formats.

/// Why bytes could not be decoded or a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    #[error("{what}: input ends at byte {len}, {need} more bytes needed at offset {offset}")]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        len: usize,
    },
    #[error("{what}: {extra} unexpected bytes after the last field")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("{what}: field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        what: &'static str,
        field: &'static str,
    },
    #[error("{what}: field `{field}` is {len} bytes, at most {max} allowed")]
    TooLong {
        what: &'static str,
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what}: unknown {field} byte {value}")]
    UnknownEnum {
        what: &'static str,
        field: &'static str,
        value: u8,
    },
    #[error("{what}: {total} bytes, at least {min} needed")]
    TooShort {
        what: &'static str,
        total: usize,
        min: usize,
    },
    #[error("{what}: the signature does not verify")]
    BadSignature { what: &'static str },
    #[error("{what}: field `{field}` is invalid")]
    InvalidField {
        what: &'static str,
        field: &'static str,
    },
}
