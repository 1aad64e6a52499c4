//! Any text as a vehicle plate: parsing never panics, and a parsed plate parses again to itself.
#![no_main]

use baylink_domain::plate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = plate::normalize(text);
    if let Ok((normalised, shape)) = plate::parse(text) {
        let (again, shape_again) = plate::parse(&normalised).expect("a parsed plate parses again");
        assert_eq!(again, normalised);
        assert_eq!(shape_again, shape);
    }
});
