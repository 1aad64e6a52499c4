//! Natural-key identity: the same person, vehicle or addressed house captured on two devices while
//! both are offline gets the same id, so the replicas merge it into one record with no human action.

use uuid::Uuid;

use crate::schema::EntityKind;
use crate::validate::Fields;

/// Namespace of Baylink's name-based (v5) ids. Never change it: ids already issued derive from it.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6f3d_1c2e_8a4b_4e5f_9d70_b1a2_c3d4_e5f6);

/// The id that normalised key fields imply, or `None` when the record has no natural key and
/// needs a fresh time-ordered id (UUIDv7) instead.
pub fn natural_id(kind: EntityKind, fields: &Fields) -> Option<Uuid> {
    natural_key(kind, fields).map(|key| Uuid::new_v5(&NAMESPACE, key.as_bytes()))
}

/// The natural key of a record as text (what [`natural_id`] hashes), or `None` when it has none:
/// two live records of a kind never share one.
pub fn natural_key(kind: EntityKind, fields: &Fields) -> Option<String> {
    let text = |name: &str| fields.get(name).and_then(|v| v.as_str());
    Some(match kind {
        EntityKind::Person => format!("person/{}/{}", text("id_type")?, text("id_number")?),
        // A plate is issued per plate kind: an ordinary plate's text may be on a car, a lorry
        // (yellow plate) and a motorcycle at once, three vehicles. Other kinds' texts differ by
        // shape, and a car's key stays the plate alone, as ids issued before kinds counted.
        EntityKind::Vehicle => match text("plate_kind") {
            Some(class @ ("motorcycle" | "large")) => {
                format!("vehicle/{class}/{}", text("plate")?)
            }
            _ => format!("vehicle/{}", text("plate")?),
        },
        EntityKind::House => format!("house/{}", text("address_code")?),
        // One stay of one person in one house, however many officers record it.
        EntityKind::Residence => {
            format!(
                "residence/{}/{}/{}",
                text("person")?,
                text("house")?,
                text("moved_in")?
            )
        }
        EntityKind::Visit | EntityKind::Dispute => return None,
    })
}

/// The fields a natural key is made of, whose edits may give a record another's key.
pub const KEY_FIELDS: [&str; 8] = [
    "id_type",
    "id_number",
    "plate",
    "plate_kind",
    "address_code",
    "person",
    "house",
    "moved_in",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::date::Date;
    use crate::validate::{Input, validate_capture};

    fn capture(kind: EntityKind, pairs: &[(&str, &str)]) -> Fields {
        let input: Input = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        validate_capture(kind, &input, Date::new(2026, 11, 28).unwrap()).unwrap()
    }

    #[test]
    fn the_same_person_typed_differently_has_one_id() {
        let a = capture(
            EntityKind::Person,
            &[
                ("village", "441303006001"),
                ("id_type", "resident_id"),
                ("id_number", "11010519491231002x"),
                ("name", "王芳"),
            ],
        );
        let b = capture(
            EntityKind::Person,
            &[
                ("village", "441303007002"),
                ("id_type", "居民身份证"),
                ("id_number", "１１０１０５１９４９１２３１００２Ｘ"),
                ("name", "王 芳"),
                ("phone", "13800138000"),
            ],
        );
        assert_eq!(
            natural_id(EntityKind::Person, &a),
            natural_id(EntityKind::Person, &b)
        );
        assert!(natural_id(EntityKind::Person, &a).is_some());
    }

    #[test]
    fn plates_and_address_codes_key_vehicles_and_houses() {
        let v = |plate| {
            capture(
                EntityKind::Vehicle,
                &[
                    ("village", "441303006001"),
                    ("plate", plate),
                    ("vehicle_type", "car"),
                ],
            )
        };
        assert_eq!(
            natural_id(EntityKind::Vehicle, &v("粤L·12345")),
            natural_id(EntityKind::Vehicle, &v("粤l12345"))
        );
        assert_ne!(
            natural_id(EntityKind::Vehicle, &v("粤L12345")),
            natural_id(EntityKind::Vehicle, &v("粤L12346"))
        );
        let house = |code: &str| {
            let mut pairs = vec![
                ("village", "441303006001"),
                ("address", "澳头石化大道1号"),
                ("use", "rental"),
                ("status", "in_use"),
            ];
            if !code.is_empty() {
                pairs.push(("address_code", code));
            }
            capture(EntityKind::House, &pairs)
        };
        let with_type = |plate, vehicle_type| {
            capture(
                EntityKind::Vehicle,
                &[
                    ("village", "441303006001"),
                    ("plate", plate),
                    ("vehicle_type", vehicle_type),
                ],
            )
        };
        // The same ordinary text on a car, a lorry and a motorcycle: three vehicles.
        let ids: std::collections::BTreeSet<_> = ["car", "truck", "motorcycle"]
            .into_iter()
            .map(|t| natural_id(EntityKind::Vehicle, &with_type("粤L12345", t)))
            .collect();
        assert_eq!(ids.len(), 3);
        // A car keeps the id its plate alone gave before plate kinds counted.
        assert_eq!(
            natural_id(EntityKind::Vehicle, &with_type("粤L12345", "car")),
            Some(Uuid::new_v5(&NAMESPACE, "vehicle/粤L12345".as_bytes()))
        );
        assert!(natural_id(EntityKind::House, &house("")).is_none());
        assert_eq!(
            natural_id(EntityKind::House, &house("ab12")),
            natural_id(EntityKind::House, &house("AB12"))
        );
    }
}
