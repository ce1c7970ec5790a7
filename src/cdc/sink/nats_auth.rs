//! NATS user credentials: a `.creds` file (user JWT and nkey seed) or a bare nkey seed.
//! Checked when a sink is defined, so a malformed one is a 400 rather than a sink that retries
//! forever; parsed here rather than by async-nats, whose parser is the only regular expression
//! the NATS sink would otherwise link.

use std::sync::Arc;

use async_nats::{AuthError, ConnectOptions};
use nkeys::KeyPair;

/// A user JWT and the key (from its seed) that signs the server's nonce.
#[derive(Clone)]
pub struct UserCreds {
    pub jwt: String,
    pub key: Arc<KeyPair>,
}

/// Parses a `.creds` file: the first decorated block is the user JWT, the second the seed.
///
/// ```text
/// -----BEGIN NATS USER JWT-----
/// eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ…
/// ------END NATS USER JWT------
/// -----BEGIN USER NKEY SEED-----
/// SUA…
/// ------END USER NKEY SEED------
/// ```
pub fn parse_creds(text: &str) -> Result<UserCreds, String> {
    let mut blocks = decorated_blocks(text);
    let jwt = blocks
        .next()
        .ok_or("no '-----BEGIN NATS USER JWT-----' block: paste the whole .creds file")?;
    let seed = blocks.next().ok_or(
        "no '-----BEGIN USER NKEY SEED-----' block after the JWT: paste the whole .creds file",
    )?;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err("the first block is not a JWT (header.claims.signature)".into());
    }
    Ok(UserCreds {
        jwt: jwt.to_owned(),
        key: Arc::new(user_key(seed)?),
    })
}

/// A user nkey seed (`SU…`) that decodes.
pub fn check_seed(seed: &str) -> Result<(), String> {
    user_key(seed).map(drop)
}

fn user_key(seed: &str) -> Result<KeyPair, String> {
    if !seed.starts_with("SU") {
        return Err("not a user nkey seed (one starts with 'SU')".into());
    }
    KeyPair::from_seed(seed)
        .map_err(|_| "the nkey seed does not decode (checksum or length)".into())
}

/// Connect options signing the server's nonce with the user's key.
pub fn with_creds(opts: ConnectOptions, creds: &UserCreds) -> ConnectOptions {
    let key = creds.key.clone();
    opts.jwt(creds.jwt.clone(), move |nonce| {
        let key = key.clone();
        async move { key.sign(&nonce).map_err(AuthError::new) }
    })
}

/// The single-line values between `---…---` marker lines, in order.
fn decorated_blocks(text: &str) -> impl Iterator<Item = &str> {
    let marker = |l: &str| l.len() >= 6 && l.starts_with("---") && l.ends_with("---");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < lines.len() {
        let value = lines[i + 1];
        if marker(lines[i]) && marker(lines[i + 2]) && !value.is_empty() && !marker(value) {
            out.push(value);
            i += 3;
        } else {
            i += 1;
        }
    }
    out.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    #[test]
    fn a_creds_file_gives_its_jwt_and_seed() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let c = parse_creds(&creds("aaa.bbb.ccc", &seed)).unwrap();
        assert_eq!(
            (c.jwt.as_str(), c.key.seed().unwrap()),
            ("aaa.bbb.ccc", seed.clone())
        );
        // Windows line ends, as nsc writes them there.
        let crlf = creds("aaa.bbb.ccc", &seed).replace('\n', "\r\n");
        assert_eq!(parse_creds(&crlf).unwrap().jwt, "aaa.bbb.ccc");
    }

    #[test]
    fn malformed_creds_are_refused_with_what_is_wrong() {
        let user = nkeys::KeyPair::new_user().seed().unwrap();
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        let mut broken = user.clone();
        broken.replace_range(10..11, if &user[10..11] == "A" { "B" } else { "A" });
        for (text, says) in [
            (String::new(), "no '-----BEGIN NATS USER JWT-----'"),
            (user.clone(), "no '-----BEGIN NATS USER JWT-----'"),
            (
                "-----BEGIN NATS USER JWT-----\naaa.bbb.ccc\n------END NATS USER JWT------\n"
                    .into(),
                "no '-----BEGIN USER NKEY SEED-----'",
            ),
            (creds("not-a-jwt", &user), "not a JWT"),
            (creds("aaa..ccc", &user), "not a JWT"),
            (creds("aaa.bbb.ccc", &account), "not a user nkey seed"),
            (creds("aaa.bbb.ccc", &broken), "does not decode"),
        ] {
            let err = parse_creds(&text).err().unwrap_or_default();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
