//! Client certificates (CAC / PIV cards, device certificates) as claims for the claim rules.
//! The listener has already verified the chain against the configured client CA; this only
//! reads names out of the end-entity certificate.

use serde_json::{json, Value};
use x509_parser::extensions::GeneralName;

/// `(who, claims)`: `who` names the holder in the audit log; `claims` holds
/// `x509.{subject, cn, o, ou, serial, issuer, san.{email, dns, uri}}` and `sub` (= the CN).
pub fn claims(der: &[u8]) -> Result<(String, Value), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("client certificate unreadable: {e}"))?;
    let subject = cert.subject();
    let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let cn = strings(&mut subject.iter_common_name()).into_iter().next();
    let (mut email, mut dns, mut uri) = (Vec::new(), Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::RFC822Name(s) => email.push((*s).to_owned()),
                GeneralName::DNSName(s) => dns.push((*s).to_owned()),
                GeneralName::URI(s) => uri.push((*s).to_owned()),
                _ => {}
            }
        }
    }
    let serial = cert.raw_serial_as_string();
    let who = match &cn {
        Some(cn) => format!("x509:{cn} (serial {serial})"),
        None => format!("x509:{} (serial {serial})", subject),
    };
    Ok((
        who,
        json!({
            "sub": cn,
            "x509": {
                "subject": subject.to_string(),
                "cn": cn,
                "o": strings(&mut subject.iter_organization()),
                "ou": strings(&mut subject.iter_organizational_unit()),
                "serial": serial,
                "issuer": cert.issuer().to_string(),
                "san": {"email": email, "dns": dns, "uri": uri},
            }
        }),
    ))
}
