//! Candidate duplicate persons: the same name and birth date, or ID numbers one character apart
//! (a typo that slipped past a document without a check digit). A reviewer decides; this only
//! proposes pairs. Two numbers one character apart agree on all but one of six blocks, so near
//! numbers are compared only within groups that share five sixths of the number: a district's
//! 400,000 persons take one pass, not 80 billion comparisons. And what a merge copies: the
//! duplicate's details the kept record lacks ([`merge_fills`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// What the finder knows of one person.
#[derive(Clone, Copy, Debug)]
pub struct PersonKey<'a> {
    /// Name.
    pub name: Option<&'a str>,
    /// Birth date `YYYY-MM-DD`.
    pub birth_date: Option<&'a str>,
    /// Normalised ID number.
    pub id_number: Option<&'a str>,
}

/// Why two persons may be one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reasons {
    /// Same name and same birth date.
    pub same_name_and_birth_date: bool,
    /// ID numbers of the same length that differ in exactly one character.
    pub id_number_one_apart: bool,
}

/// A candidate pair: indexes into the slice given to [`candidates`], `a < b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The first person's index.
    pub a: usize,
    /// The second person's index.
    pub b: usize,
    /// Why they are a candidate.
    pub reasons: Reasons,
}

/// Whether two ID numbers have the same length and differ in exactly one character.
pub fn one_apart(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.chars(), b.chars());
    let mut differences = 0;
    loop {
        match (a.next(), b.next()) {
            (None, None) => return differences == 1,
            (Some(x), Some(y)) => {
                if x != y {
                    differences += 1;
                    if differences > 1 {
                        return false;
                    }
                }
            }
            _ => return false,
        }
    }
}

/// Blocks an ID number is cut into for grouping: more blocks, smaller groups, more keys.
const BLOCKS: usize = 6;

/// Pairs compared at most in one search: a village of namesakes born the same day (k of them
/// make k²/2 pairs) costs a page view no more than this.
pub const COMPARISONS: usize = 4_000_000;

/// The candidate pairs among `people`, ordered by `(a, b)`: every one, unless there are more
/// than `most` or finding them would compare more than [`COMPARISONS`] pairs, when the search
/// stops there (each pair it gives is still one, though a pair found by its name may then not
/// say that its numbers are one apart too).
pub fn candidates(people: &[PersonKey<'_>], most: usize) -> Vec<Candidate> {
    search(people, most).pairs
}

/// What a search for candidate pairs found, and whether it stopped at [`COMPARISONS`] (then
/// pairs beyond those given may exist, however few were found).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The pairs, as [`candidates`] gives them.
    pub pairs: Vec<Candidate>,
    /// Whether the search stopped at its bound on comparisons.
    pub stopped: bool,
}

/// [`candidates`], saying whether the search stopped at its bound.
pub fn search(people: &[PersonKey<'_>], most: usize) -> Found {
    let mut pairs: BTreeMap<(usize, usize), Reasons> = BTreeMap::new();
    let mut compared = 0usize;
    let enough = |pairs: &BTreeMap<(usize, usize), Reasons>, compared: usize| {
        pairs.len() >= most || compared >= COMPARISONS
    };

    let mut by_name_birth: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, p) in people.iter().enumerate() {
        if let (Some(name), Some(birth)) = (p.name, p.birth_date)
            && !name.is_empty()
            && !birth.is_empty()
        {
            by_name_birth.entry((name, birth)).or_default().push(i);
        }
    }
    // Groups in the order of their first person: the same pairs each time for the same people.
    let mut groups: Vec<&Vec<usize>> = by_name_birth.values().collect();
    groups.sort_unstable_by_key(|g| g[0]);
    'named: for group in groups {
        for (x, &a) in group.iter().enumerate() {
            for &b in &group[x + 1..] {
                if enough(&pairs, compared) {
                    break 'named;
                }
                compared += 1;
                pairs.entry((a, b)).or_default().same_name_and_birth_date = true;
            }
        }
    }

    // Two strings one substitution apart agree on every block but (at most) one: group by a hash
    // of the string without each block in turn (sorting, not a map of vectors: no allocation per
    // key), then compare within each group. A hash collision only adds a comparison.
    let mut keys: Vec<(u64, usize)> = Vec::new();
    for (i, p) in people.iter().enumerate() {
        let Some(id) = p.id_number else { continue };
        let chars: Vec<char> = id.chars().collect();
        let n = chars.len();
        if n == 0 {
            continue;
        }
        let blocks = n.min(BLOCKS);
        let cut = |b: usize| b * n / blocks;
        for left_out in 0..blocks {
            let mut hasher = std::hash::DefaultHasher::new();
            (n, left_out).hash(&mut hasher);
            for b in (0..blocks).filter(|&b| b != left_out) {
                chars[cut(b)..cut(b + 1)].hash(&mut hasher);
            }
            keys.push((hasher.finish(), i));
        }
    }
    keys.sort_unstable();
    'numbered: for group in keys.chunk_by(|x, y| x.0 == y.0) {
        for (x, &(_, a)) in group.iter().enumerate() {
            for &(_, b) in &group[x + 1..] {
                if enough(&pairs, compared) {
                    break 'numbered;
                }
                compared += 1;
                let (ia, ib) = (people[a].id_number, people[b].id_number);
                if let (Some(ia), Some(ib)) = (ia, ib)
                    && a != b
                    && one_apart(ia, ib)
                {
                    pairs
                        .entry((a.min(b), a.max(b)))
                        .or_default()
                        .id_number_one_apart = true;
                }
            }
        }
    }

    Found {
        pairs: pairs
            .into_iter()
            .map(|((a, b), reasons)| Candidate { a, b, reasons })
            .collect(),
        stopped: compared >= COMPARISONS,
    }
}

/// Fields a merge never copies: the kept record's identity.
pub const IDENTITY: [&str; 4] = ["village", "id_type", "id_number", "name"];

/// What merging a duplicate into the record kept copies: each field the duplicate has that an
/// officer writes (not the system), is not part of who the kept record is ([`IDENTITY`]), and
/// the kept record lacks (absent or null).
pub fn merge_fills(
    kind: Option<crate::EntityKind>,
    kept: &[(String, serde_json::Value)],
    duplicate: Vec<(String, serde_json::Value)>,
) -> Vec<(String, serde_json::Value)> {
    let has = |field: &str| kept.iter().any(|(f, v)| f == field && !v.is_null());
    duplicate
        .into_iter()
        .filter(|(field, value)| {
            let officer = kind
                .and_then(|k| k.field(field))
                .is_some_and(|s| s.writer != crate::Writer::System);
            officer && !IDENTITY.contains(&field.as_str()) && !value.is_null() && !has(field)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key<'a>(name: &'a str, birth: &'a str, id: &'a str) -> PersonKey<'a> {
        PersonKey {
            name: Some(name),
            birth_date: Some(birth),
            id_number: Some(id),
        }
    }

    #[test]
    fn a_typo_in_a_passport_number_and_a_namesake_born_the_same_day_are_found() {
        let people = [
            key("张伟", "1990-01-01", "E12345678"),
            key("李娜", "1985-05-05", "E12345679"),
            key("张伟", "1990-01-01", "441302199001011234"),
            key("王芳", "1992-02-02", "441302199202021111"),
        ];
        let found = candidates(&people, usize::MAX);
        assert_eq!(
            found,
            vec![
                Candidate {
                    a: 0,
                    b: 1,
                    reasons: Reasons {
                        same_name_and_birth_date: false,
                        id_number_one_apart: true
                    }
                },
                Candidate {
                    a: 0,
                    b: 2,
                    reasons: Reasons {
                        same_name_and_birth_date: true,
                        id_number_one_apart: false
                    }
                },
            ]
        );
    }

    #[test]
    fn one_apart_means_same_length_and_one_substitution() {
        assert!(one_apart("ABC", "ABD"));
        assert!(!one_apart("ABC", "ABC"));
        assert!(!one_apart("ABC", "ABCD"));
        assert!(!one_apart("ABC", "BAC"));
        assert!(one_apart("粤A1", "粤B1"));
    }

    fn brute_force(people: &[PersonKey<'_>]) -> Vec<Candidate> {
        let mut out = Vec::new();
        for a in 0..people.len() {
            for b in a + 1..people.len() {
                let (p, q) = (people[a], people[b]);
                let reasons = Reasons {
                    same_name_and_birth_date: p.name.is_some_and(|n| !n.is_empty())
                        && p.birth_date.is_some_and(|d| !d.is_empty())
                        && p.name == q.name
                        && p.birth_date == q.birth_date,
                    id_number_one_apart: matches!((p.id_number, q.id_number), (Some(x), Some(y)) if one_apart(x, y)),
                };
                if reasons != Reasons::default() {
                    out.push(Candidate { a, b, reasons });
                }
            }
        }
        out
    }

    proptest! {
        /// The grouped search finds exactly the pairs that comparing everyone with everyone finds.
        #[test]
        fn grouping_finds_what_comparing_every_pair_finds(
            people in prop::collection::vec(
                (prop::option::of("[ab]{1,2}"), prop::option::of("[12]"), prop::option::of("[xyz]{1,7}")),
                0..40,
            ),
            most in 0usize..30,
        ) {
            let keys: Vec<PersonKey<'_>> = people
                .iter()
                .map(|(n, d, i)| PersonKey {
                    name: n.as_deref(),
                    birth_date: d.as_deref(),
                    id_number: i.as_deref(),
                })
                .collect();
            let every = brute_force(&keys);
            prop_assert!(candidates(&keys, usize::MAX) == every);
            // Stopped at `most`: that many of them, each one of them, each reason it gives true
            // (a pair found by its name may not yet say its numbers are one apart too).
            let some = candidates(&keys, most);
            prop_assert_eq!(some.len(), every.len().min(most));
            for found in &some {
                let truth = every.iter().find(|e| (e.a, e.b) == (found.a, found.b));
                let holds = truth.is_some_and(|t| {
                    (!found.reasons.same_name_and_birth_date || t.reasons.same_name_and_birth_date)
                        && (!found.reasons.id_number_one_apart || t.reasons.id_number_one_apart)
                });
                prop_assert!(holds, "{:?} against {:?}", found, truth);
            }
        }
    }

    #[test]
    fn a_village_of_namesakes_costs_a_search_a_bounded_number_of_comparisons() {
        // 4,000 people of one name and birth date: 8 million pairs, not all compared.
        let numbers: Vec<String> = (0..4_000).map(|i| format!("E{i:08}")).collect();
        let people: Vec<PersonKey<'_>> = numbers
            .iter()
            .map(|id| key("张伟", "1990-01-01", id))
            .collect();
        assert_eq!(candidates(&people, 200).len(), 200);
        assert!(
            !search(&people, 200).stopped,
            "stopped at the page's pairs, not the bound"
        );
        let all = search(&people, usize::MAX);
        assert_eq!(
            all.pairs.len(),
            COMPARISONS,
            "stopped at the comparisons' bound"
        );
        assert!(all.stopped, "and says so");
    }

    #[test]
    fn a_merge_fills_the_gaps_of_the_record_kept_with_the_duplicates_details_only() {
        use serde_json::json;
        let kept = vec![
            ("name".to_owned(), json!("王芳")),
            ("phone".to_owned(), json!("13800138000")),
            ("employer".to_owned(), serde_json::Value::Null),
        ];
        let duplicate = vec![
            ("name".to_owned(), json!("王方")),
            ("id_number".to_owned(), json!("11010519491231002X")),
            ("phone".to_owned(), json!("13900139000")),
            ("employer".to_owned(), json!("大亚湾石化")),
            ("occupation".to_owned(), json!("工人")),
            ("notes".to_owned(), serde_json::Value::Null),
            ("created_by".to_owned(), json!("o1")),
            ("shoe_size".to_owned(), json!(42)),
        ];
        let fills = merge_fills(Some(crate::EntityKind::Person), &kept, duplicate);
        let fields: Vec<&str> = fills.iter().map(|(f, _)| f.as_str()).collect();
        // Not the identity, not what the kept record has, not nulls, system fields or unknowns.
        assert_eq!(fields, ["employer", "occupation"]);
    }
}
