//! Node ids and stamps: a stamp is (hybrid logical clock, node id), totally ordered, and it decides
//! which value of a field wins.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::Error;
use crate::hlc::Hlc;

/// The identity of a replica: a device or a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub Uuid);

impl NodeId {
    /// A fresh random node id.
    pub fn random() -> NodeId {
        NodeId(Uuid::new_v4())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<NodeId, Error> {
        Uuid::parse_str(s)
            .map(NodeId)
            .map_err(|_| Error::BadNodeId(s.to_owned()))
    }
}

/// When and by whom a value was written. Ordered by clock, then node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The writer's hybrid logical clock reading.
    pub hlc: Hlc,
    /// The writer.
    pub node: NodeId,
}

impl Stamp {
    /// A stamp from its parts.
    pub fn new(hlc: Hlc, node: NodeId) -> Stamp {
        Stamp { hlc, node }
    }
}

/// Text form `<16 hex digits of the clock>@<node uuid>`: fixed width, so text order is stamp order.
impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.hlc, self.node)
    }
}

impl FromStr for Stamp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Stamp, Error> {
        let bad = || Error::BadStamp(s.chars().take(80).collect());
        let (hlc, node) = s.split_once('@').ok_or_else(bad)?;
        if hlc.len() != 16 {
            return Err(bad());
        }
        let hlc = u64::from_str_radix(hlc, 16).map_err(|_| bad())?;
        let node = Uuid::parse_str(node).map_err(|_| bad())?;
        Ok(Stamp::new(Hlc::from_u64(hlc), NodeId(node)))
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Stamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stamp(hlc: u64, node: u128) -> Stamp {
        Stamp::new(Hlc::from_u64(hlc), NodeId(Uuid::from_u128(node)))
    }

    #[test]
    fn text_form_is_pinned() {
        let s = stamp(0x0000_018c_5e2a_0001, 1);
        assert_eq!(
            s.to_string(),
            "0000018c5e2a0001@00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        assert!("zz@x".parse::<Stamp>().is_err());
    }

    proptest! {
        #[test]
        fn text_round_trips_and_orders_like_the_stamp(a in any::<(u64, u128)>(), b in any::<(u64, u128)>()) {
            let (sa, sb) = (stamp(a.0, a.1), stamp(b.0, b.1));
            prop_assert_eq!(sa.to_string().parse::<Stamp>().unwrap(), sa);
            prop_assert_eq!(sa.cmp(&sb), sa.to_string().cmp(&sb.to_string()));
        }
    }
}
