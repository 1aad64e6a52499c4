//! Any text as a resident ID number: parsing and normalising never panic, and whatever parses is
//! normalised, 18 characters, and parses again to itself.
#![no_main]

use baylink_domain::{Date, id_number};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let today = Date::parse("2026-11-29").expect("a date");
    let normalised = id_number::normalize(text);
    if let Ok(id) = id_number::parse(text, today) {
        assert_eq!(id.number.chars().count(), 18);
        assert_eq!(id.number, id_number::normalize(&id.number));
        let again = id_number::parse(&id.number, today).expect("a parsed number parses again");
        assert_eq!(again.number, id.number);
    }
    let _ = id_number::parse(&normalised, today);
});
