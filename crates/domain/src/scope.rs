//! Which villages see a record: the rule both the server's scopes and the review's reach follow.
//!
//! A record belongs to its home village. A person is also seen where she lives: in the village of
//! every house one of her residences names, while that residence is neither moved out of nor
//! deleted. So an officer whose village a person moved into holds her, and holds her no longer
//! once she moves out.

use std::collections::BTreeSet;

/// One residence of a person, as the scope rule reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Residence {
    /// The home village of the house it names (none: no such house, or a house without one).
    pub house_village: Option<String>,
    /// Whether the person moved out (its `moved_out` is set).
    pub moved_out: bool,
    /// Whether the residence is deleted.
    pub deleted: bool,
}

/// The villages a person is in: her home village and those of the houses she lives in now.
pub fn person_villages<'a>(
    home: Option<&str>,
    residences: impl IntoIterator<Item = &'a Residence>,
) -> BTreeSet<String> {
    let mut villages: BTreeSet<String> = home.map(str::to_owned).into_iter().collect();
    villages.extend(
        residences
            .into_iter()
            .filter(|r| !r.moved_out && !r.deleted)
            .filter_map(|r| r.house_village.clone()),
    );
    villages
}

/// The villages any other record is in: its home village alone.
pub fn record_villages(home: Option<&str>) -> BTreeSet<String> {
    home.map(str::to_owned).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn living(village: &str) -> Residence {
        Residence {
            house_village: Some(village.to_owned()),
            moved_out: false,
            deleted: false,
        }
    }

    #[test]
    fn a_person_is_seen_at_home_and_where_she_lives_now() {
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert_eq!(person_villages(Some("A"), []), set(&["A"]));
        assert_eq!(
            person_villages(Some("A"), &[living("B"), living("C")]),
            set(&["A", "B", "C"])
        );
        // Moved out, deleted, or a house with no village: not there.
        let moved = Residence {
            moved_out: true,
            ..living("B")
        };
        let deleted = Residence {
            deleted: true,
            ..living("C")
        };
        let nowhere = Residence {
            house_village: None,
            ..living("D")
        };
        assert_eq!(
            person_villages(Some("A"), &[moved, deleted, nowhere]),
            set(&["A"])
        );
        // A person with no home village yet is seen only where she lives.
        assert_eq!(person_villages(None, &[living("B")]), set(&["B"]));
        assert_eq!(record_villages(Some("A")), set(&["A"]));
        assert!(record_villages(None).is_empty());
    }
}
