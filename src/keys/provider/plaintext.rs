//! `plaintext` provider (dev builds only): the DEK is stored in the clear beside the data.
//!
//! Compiled only with the `dev` cargo feature, and the gateway refuses to start with it unless
//! dev mode is explicitly on. It keeps the envelope format so tests exercise the same code path.

use zeroize::Zeroizing;

use super::{BoxFuture, KeyProvider, ProviderKind};
use crate::keys::KeyError;

#[derive(Default)]
pub struct Plaintext;

impl KeyProvider for Plaintext {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Plaintext
    }

    fn kek_id(&self) -> &str {
        "none"
    }

    fn wrap<'a>(
        &'a self,
        dek: &'a [u8; 32],
        _context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>> {
        Box::pin(async move { Ok(dek.to_vec()) })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        _context: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<[u8; 32]>, KeyError>> {
        Box::pin(async move {
            let dek: [u8; 32] = wrapped.try_into().map_err(|_| KeyError::Malformed {
                what: "plaintext DEK is not 32 bytes",
            })?;
            Ok(Zeroizing::new(dek))
        })
    }
}
