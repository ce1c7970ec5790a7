//! Test certificates made with rcgen: a CA, a server certificate for 127.0.0.1, client
//! certificates with a chosen common name and e-mail SAN, and expired ones.

pub struct Ca {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// (certificate PEM, private key PEM)
pub type Leaf = (String, String);

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn sign(&self, mut params: rcgen::CertificateParams) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn server(&self) -> Leaf {
        self.sign(rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap())
    }

    pub fn expired_server(&self) -> Leaf {
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(p)
    }

    /// A client certificate: CN `cn`, organizational unit `ou`, e-mail SAN `email`.
    pub fn client(&self, cn: &str, ou: &str, email: &str) -> Leaf {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, ou);
        p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(email.try_into().unwrap())];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(p)
    }
}

/// Writes `content` to `dir/name` and returns the path as text.
pub fn file(dir: &std::path::Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}
