//! Deterministic, valid, made-up data (ID numbers, names) for demos, benchmarks and tests: the
//! same `n` always gives the same value, and distinct `n` distinct ID numbers.

use crate::date::Date;
use crate::id_number::check_char;

/// Counties whose codes the synthetic ID numbers carry (Daya Bay's and the floating population's
/// usual origins).
const COUNTIES: [&str; 8] = [
    "441303", "441302", "445222", "440882", "430524", "450881", "360735", "513022",
];
const SURNAMES: [char; 20] = [
    '王', '李', '张', '刘', '陈', '杨', '黄', '赵', '吴', '周', '徐', '孙', '马', '朱', '胡', '郭',
    '何', '高', '林', '罗',
];
const GIVEN: [char; 20] = [
    '芳', '强', '静', '伟', '娜', '敏', '磊', '军', '洋', '勇', '艳', '杰', '娟', '涛', '明', '超',
    '秀', '霞', '平', '刚',
];

/// A valid resident ID number, distinct for every `n` below 96 million; births 1970–2002.
pub fn resident_id(n: u64) -> String {
    let county = COUNTIES[(n % 8) as usize];
    let seq = n / 8 % 1000;
    // 12,000 birthdays from 1970-01-01; 7,919 is prime to 12,000, so the mapping is one to one.
    let birth = Date::from_days((n / 8_000 * 7_919 % 12_000) as i64);
    let first17 = format!("{county}{}{seq:03}", birth.to_string().replace('-', ""));
    let check = check_char(first17.as_bytes());
    format!("{first17}{check}")
}

/// A valid ordinary plate of Huizhou (粤L and five serial characters), distinct for every `n`
/// below 34⁵ (45 million).
pub fn plate(n: u64) -> String {
    const SERIAL: &[u8; 34] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    let mut chars = [b'0'; 5];
    let mut rest = n;
    for c in chars.iter_mut().rev() {
        *c = SERIAL[(rest % 34) as usize];
        rest /= 34;
    }
    format!("粤L{}", String::from_utf8_lossy(&chars))
}

/// A three-character Chinese name.
pub fn name(n: u64) -> String {
    [
        SURNAMES[(n % 20) as usize],
        GIVEN[(n / 20 % 20) as usize],
        GIVEN[(n / 400 % 20) as usize],
    ]
    .iter()
    .collect()
}

/// A two-character Chinese name (a landlord, a party to a dispute).
pub fn short_name(n: u64) -> String {
    [SURNAMES[(n % 20) as usize], GIVEN[(n / 7 % 20) as usize]]
        .iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_id_numbers_are_valid_and_distinct() {
        let today = Date::new(2026, 11, 28).unwrap();
        let mut seen = std::collections::HashSet::new();
        for n in (0..200_000).chain(95_000_000..95_001_000) {
            let id = resident_id(n);
            assert!(crate::id_number::parse(&id, today).is_ok(), "{id}");
            assert!(seen.insert(id), "repeated at {n}");
        }
        assert_eq!(name(0).chars().count(), 3);
    }

    #[test]
    fn synthetic_plates_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for n in (0..50_000).chain(45_000_000..45_001_000) {
            let plate = plate(n);
            assert!(crate::plate::parse(&plate).is_ok(), "{plate}");
            assert!(seen.insert(plate), "repeated at {n}");
        }
    }
}
