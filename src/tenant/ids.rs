//! Identifier rules shared by orgs, formations and tokens.

use super::TenantError;

const MAX_ID: usize = 128;

/// `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`: no dots (NATS subject tokens), no separators, no NUL.
pub fn validate_id(field: &'static str, id: &str) -> Result<(), TenantError> {
    let bytes = id.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(TenantError::invalid(field, "must not be empty"));
    };
    if bytes.len() > MAX_ID {
        return Err(TenantError::invalid(
            field,
            format!("must be at most {MAX_ID} characters"),
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(TenantError::invalid(
            field,
            "must start with a letter or digit",
        ));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    {
        return Err(TenantError::invalid(
            field,
            "may contain only letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

/// A random 16-byte identity for a created thing (org or formation generation).
pub(crate) fn random_uid() -> Result<[u8; 16], TenantError> {
    let mut out = [0u8; 16];
    getrandom::fill(&mut out).map_err(|_| TenantError::Key(crate::keys::KeyError::Rng))?;
    Ok(out)
}

/// A random token id: 8 bytes as 16 lowercase hex characters.
pub(crate) fn random_token_id() -> Result<String, TenantError> {
    let mut out = [0u8; 8];
    getrandom::fill(&mut out).map_err(|_| TenantError::Key(crate::keys::KeyError::Rng))?;
    Ok(hex::encode(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_allow_list() {
        for ok in ["a", "acme-corp", "A_1", &"x".repeat(128)] {
            assert!(validate_id("id", ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "_org",
            "-a",
            "a.b",
            "a b",
            "a/b",
            "é",
            "a\0b",
            &"x".repeat(129),
        ] {
            assert!(validate_id("id", bad).is_err(), "{bad:?}");
        }
    }
}
