//! MembershipPolicy and MeshTier bytes (`reference/peat-wire.md` §3.4).

use super::MeshError;

/// How a formation admits devices. Wire byte: Open 0, Controlled 1, Strict 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MembershipPolicy {
    Open,
    #[default]
    Controlled,
    Strict,
}

impl MembershipPolicy {
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Open => 0,
            Self::Controlled => 1,
            Self::Strict => 2,
        }
    }

    pub fn from_byte(what: &'static str, b: u8) -> Result<Self, MeshError> {
        match b {
            0 => Ok(Self::Open),
            1 => Ok(Self::Controlled),
            2 => Ok(Self::Strict),
            value => Err(MeshError::UnknownEnum {
                what,
                field: "policy",
                value,
            }),
        }
    }

    /// Parses a name as peat-mesh does: surrounding whitespace trimmed, case ignored.
    pub fn from_name(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" => Some(Self::Open),
            "controlled" => Some(Self::Controlled),
            "strict" => Some(Self::Strict),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "Open",
            Self::Controlled => "Controlled",
            Self::Strict => "Strict",
        }
    }
}

/// Trust tier of a certificate; lower is more trusted. Wire byte 0..=3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MeshTier {
    Enterprise,
    Regional,
    Tactical,
    Edge,
}

impl MeshTier {
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Enterprise => 0,
            Self::Regional => 1,
            Self::Tactical => 2,
            Self::Edge => 3,
        }
    }

    pub fn from_byte(what: &'static str, b: u8) -> Result<Self, MeshError> {
        match b {
            0 => Ok(Self::Enterprise),
            1 => Ok(Self::Regional),
            2 => Ok(Self::Tactical),
            3 => Ok(Self::Edge),
            value => Err(MeshError::UnknownEnum {
                what,
                field: "tier",
                value,
            }),
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "enterprise" => Some(Self::Enterprise),
            "regional" => Some(Self::Regional),
            "tactical" => Some(Self::Tactical),
            "edge" => Some(Self::Edge),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Enterprise => "Enterprise",
            Self::Regional => "Regional",
            Self::Tactical => "Tactical",
            Self::Edge => "Edge",
        }
    }
}

/// Certificate permission bits (§3.4). Only defined bits are ever issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const RELAY: Self = Self(0x01);
    pub const EMERGENCY: Self = Self(0x02);
    pub const ENROLL: Self = Self(0x04);
    pub const ADMIN: Self = Self(0x80);
    pub const STANDARD: Self = Self(0x03);
    pub const AUTHORITY: Self = Self(0x87);
    const DEFINED: u8 = 0x87;
    const NAMES: [(&'static str, Self); 4] = [
        ("RELAY", Self::RELAY),
        ("EMERGENCY", Self::EMERGENCY),
        ("ENROLL", Self::ENROLL),
        ("ADMIN", Self::ADMIN),
    ];

    /// Any byte as read from the wire (a decoder must not reject bits it does not know).
    pub fn from_wire(b: u8) -> Self {
        Self(b)
    }

    /// Refuses undefined bits: the gateway issues only what peat-mesh defines.
    pub fn from_defined(b: u8) -> Option<Self> {
        (b & !Self::DEFINED == 0).then_some(Self(b))
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    /// True when every bit of `p` is set.
    pub fn has(self, p: Self) -> bool {
        self.0 & p.0 == p.0
    }

    pub fn union(self, p: Self) -> Self {
        Self(self.0 | p.0)
    }

    pub fn intersect(self, p: Self) -> Self {
        Self(self.0 & p.0)
    }

    /// Parses a single name (`relay`, `standard`, …), case-insensitively.
    pub fn from_name(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "STANDARD" => Some(Self::STANDARD),
            "AUTHORITY" => Some(Self::AUTHORITY),
            "NONE" => Some(Self(0)),
            n => Self::NAMES.iter().find(|(k, _)| *k == n).map(|(_, p)| *p),
        }
    }

    /// The names of the set bits, for JSON and the audit log.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, p)| self.has(*p))
            .map(|(n, _)| *n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn enums() -> Value {
        let v: Value =
            serde_json::from_str(include_str!("../../tests/vectors/peat-mesh-0.6.0.json")).unwrap();
        v["enums"].clone()
    }

    #[test]
    fn policy_bytes_and_names_match_reference() {
        let e = enums();
        for case in e["membership_policy"].as_array().unwrap() {
            let b = u8::try_from(case["byte"].as_u64().unwrap()).unwrap();
            let p = MembershipPolicy::from_byte("t", b).unwrap();
            assert_eq!(p.name(), case["name"]);
            assert_eq!(p.to_byte(), b);
        }
        for (input, want) in e["membership_policy_from_str_name"].as_object().unwrap() {
            let got = MembershipPolicy::from_name(input).map(|p| p.name());
            assert_eq!(got, want.as_str(), "input {input:?}");
        }
        assert!(MembershipPolicy::from_byte("t", 3).is_err());
    }

    #[test]
    fn tier_bytes_and_names_match_reference() {
        let e = enums();
        for case in e["mesh_tier"].as_array().unwrap() {
            let b = u8::try_from(case["byte"].as_u64().unwrap()).unwrap();
            let t = MeshTier::from_byte("t", b).unwrap();
            assert_eq!(MeshTier::from_name(case["name"].as_str().unwrap()), Some(t));
        }
        for (input, want) in e["mesh_tier_from_str_name"].as_object().unwrap() {
            let got = MeshTier::from_name(input);
            let want = want.as_str().and_then(MeshTier::from_name);
            assert_eq!(got, want, "input {input:?}");
        }
        assert!(MeshTier::from_byte("t", 4).is_err());
    }

    #[test]
    fn permission_bits_match_reference() {
        let e = enums();
        for (name, bits) in e["permissions"].as_object().unwrap() {
            let p = Permissions::from_name(name).unwrap();
            assert_eq!(u64::from(p.bits()), bits.as_u64().unwrap(), "{name}");
        }
        assert!(Permissions::AUTHORITY.has(Permissions::STANDARD));
        assert!(!Permissions::STANDARD.has(Permissions::ENROLL));
        assert_eq!(Permissions::from_defined(0x08), None);
        assert_eq!(Permissions::STANDARD.names(), ["RELAY", "EMERGENCY"]);
    }
}
