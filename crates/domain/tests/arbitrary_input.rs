//! What the fuzz targets check, on the stable toolchain in every test run: any text as an ID number
//! or a plate never panics, and what parses is normalised and parses again to itself.

use baylink_domain::{Date, id_number, plate};
use proptest::prelude::*;

fn today() -> Date {
    Date::parse("2026-11-29").expect("a date")
}

proptest! {
    #[test]
    fn any_text_as_an_id_number(text in "\\PC{0,24}|[0-9xX ]{15,20}") {
        let _ = id_number::normalize(&text);
        if let Ok(id) = id_number::parse(&text, today()) {
            prop_assert_eq!(id.number.chars().count(), 18);
            let again = id_number::parse(&id.number, today()).expect("parses again");
            prop_assert_eq!(again.number, id.number);
        }
    }

    #[test]
    fn any_text_as_a_plate(text in "\\PC{0,12}|[粤京沪][A-Z·•.][A-Z0-9DF学警挂港澳]{4,7}") {
        let _ = plate::normalize(&text);
        if let Ok((normalised, shape)) = plate::parse(&text) {
            let (again, shape_again) = plate::parse(&normalised).expect("parses again");
            prop_assert_eq!(again, normalised);
            prop_assert_eq!(shape_again, shape);
        }
    }
}
