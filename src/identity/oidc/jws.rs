//! `jsonwebtoken`'s signature checks on *ring*, the crypto the TLS stack already links: a
//! second set (RustCrypto's RSA, P-256, P-384 and Ed25519) would add size and the `rsa`
//! crate's timing advisory for nothing. Verification only; the gateway signs no JWTs.

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature as sig;

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

fn rsa_params(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn scheme(alg: Algorithm) -> Option<&'static dyn sig::VerificationAlgorithm> {
    if let Some(rsa) = rsa_params(alg) {
        return Some(rsa);
    }
    Some(match alg {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        // Shared-secret MACs (an identity provider's published keys are never secrets) and
        // whatever a later version adds.
        _ => return None,
    })
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let checked = match (self.key.kind(), rsa_params(self.alg)) {
            (DecodingKeyKind::RsaModulusExponent { n, e }, Some(params)) => {
                sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
            (DecodingKeyKind::SecretOrDer(bytes), _) => match scheme(self.alg) {
                Some(s) => sig::UnparsedPublicKey::new(s, bytes).verify(msg, signature),
                None => return Err(signature::Error::new()),
            },
            _ => return Err(signature::Error::new()),
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let family_fits = key.family() == alg.family();
    if !family_fits || scheme(*alg).is_none() {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(ErrorKind::InvalidAlgorithm.into())
}

fn digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(ring::digest::digest(alg, data).as_ref().to_vec())
}

/// Verification on *ring*; the key utilities serve JWK thumbprints only (no private keys here).
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(ErrorKind::InvalidKeyFormat.into()),
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::InvalidKeyFormat.into()),
        ec_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidKeyFormat.into()),
        ed_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidKeyFormat.into()),
        compute_digest: digest,
    },
};

/// Makes *ring* the process's JWT verifier; call before any verification (idempotent).
pub fn install() {
    static ONCE: Once = Once::new();
    // `Err` means a provider is installed already: only this one exists in the binary.
    ONCE.call_once(|| {
        let _ = PROVIDER.install_default();
    });
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    use super::super::verify::{verify, Expect};

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn token(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let head = b64(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#).as_bytes());
        let body = b64(br#"{"iss":"https://idp","aud":"gw","exp":9999999999,"sub":"s"}"#);
        let msg = format!("{head}.{body}");
        format!("{msg}.{}", b64(&sign(msg.as_bytes())))
    }

    fn expect(alg: &[String]) -> Expect<'_> {
        Expect {
            issuer: "https://idp",
            audience: "gw",
            algorithms: alg,
            skew_secs: 0,
        }
    }

    #[test]
    fn ring_verifies_eddsa_and_es256_and_refuses_a_changed_byte() {
        let rng = SystemRandom::new();
        let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref())
            .unwrap();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{}"}}]}}"#,
            b64(ed.public_key().as_ref())
        );
        let algs = ["EdDSA".to_owned()];
        let t = token("EdDSA", |m| ed.sign(m).as_ref().to_vec());
        assert_eq!(verify(&t, &jwks, &expect(&algs)).unwrap()["sub"], "s");
        let mut bad = t.clone().into_bytes();
        let i = bad.len() - 3;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert!(verify(&String::from_utf8(bad).unwrap(), &jwks, &expect(&algs)).is_err());

        let pk = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk.as_ref(), &rng).unwrap();
        let point = ec.public_key().as_ref();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
            b64(&point[1..33]),
            b64(&point[33..])
        );
        let algs = ["ES256".to_owned()];
        let t = token("ES256", |m| ec.sign(&rng, m).unwrap().as_ref().to_vec());
        assert_eq!(verify(&t, &jwks, &expect(&algs)).unwrap()["aud"], "gw");
        // A MAC over the key's bytes is not a signature by it.
        let hs = ["HS256".to_owned()];
        let forged = token("HS256", |m| {
            ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, point), m)
                .as_ref()
                .to_vec()
        });
        assert!(verify(&forged, &jwks, &expect(&hs)).is_err());
    }
}
