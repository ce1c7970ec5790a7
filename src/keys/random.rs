//! Key-grade randomness from the operating system.

use zeroize::Zeroizing;

use super::KeyError;

/// 32 bytes from the OS CSPRNG.
pub fn random_secret32() -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut out = Zeroizing::new([0u8; 32]);
    getrandom::fill(out.as_mut()).map_err(|_| KeyError::Rng)?;
    Ok(out)
}

pub(crate) fn random_nonce() -> Result<[u8; 12], KeyError> {
    let mut out = [0u8; 12];
    getrandom::fill(&mut out).map_err(|_| KeyError::Rng)?;
    Ok(out)
}
