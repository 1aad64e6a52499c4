//! The budget's count against what parsing really allocates: bodies of each dense shape a
//! hostile client could send, read within their budget, never take more memory than it.

// A counting allocator is the one way to see what a parse allocates.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use baylink_sync::bounded::{Exceeded, budget_for, within};
use baylink_sync::wire::PushRequest;
use serde_json::Value;

/// Bytes allocated now, and the most since last reset.
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            let now = NOW.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract.
        unsafe { System.dealloc(block, layout) };
        NOW.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let moved = unsafe { System.realloc(block, layout, size) };
        if !moved.is_null() {
            // Counted as a move: the new block, then the old one gone.
            let now = NOW.fetch_add(size, Ordering::SeqCst) + size;
            PEAK.fetch_max(now, Ordering::SeqCst);
            NOW.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(serde::Deserialize)]
struct Holder {
    #[serde(deserialize_with = "baylink_sync::bounded::value")]
    #[allow(dead_code)]
    value: Value,
}

/// A body of about `len` bytes whose value is `unit` repeated in an array.
fn body(unit: &str, len: usize) -> String {
    let mut text = String::from(r#"{"value": ["#);
    while text.len() + unit.len() + 2 < len {
        text.push_str(unit);
        text.push(',');
    }
    text.push_str(unit);
    text.push_str("]}");
    text
}

/// What vectors growing to hold a list or an array may take beyond what the budget counted,
/// for a moment: a list's first block doubling up to 1,024 records, the last block's room when
/// the blocks are put together (docs/security.md).
const GROWING: usize = 512 * 1024;

/// Reads `text` as `T` within its budget: the most memory it took above what was held before,
/// what it spent of the budget, and whether it was refused.
fn peak_of<T: serde::de::DeserializeOwned>(text: &str) -> (usize, usize, bool) {
    let (_, spent) = baylink_sync::bounded::spending(|| serde_json::from_str::<T>(text).is_ok());
    let before = NOW.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let read = within(budget_for(text.len()), || serde_json::from_str::<T>(text));
    let refused = matches!(read, Err(Exceeded));
    drop(read);
    (PEAK.load(Ordering::SeqCst) - before, spent, refused)
}

/// Reads `text` as `T` and checks the memory it took: within what it spent when read whole, or
/// within its budget when refused, either with [`GROWING`] more.
fn check<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> bool {
    let (peak, spent, refused) = peak_of::<T>(text);
    let budget = budget_for(text.len());
    let counted = if refused { budget } else { spent };
    assert!(
        peak <= counted + GROWING,
        "{what} ({} bytes): {peak} bytes at the peak, {spent} spent, the budget {budget} (refused: {refused})",
        text.len()
    );
    refused
}

// One test, so that no other runs beside it while the allocator's counts are read.
#[test]
fn hostile_bodies_take_no_more_than_their_budget_while_parsed() {
    let nested = format!("{}0{}", r#"{"a":"#.repeat(100), "}".repeat(100));
    let wide = format!(
        "{{{}}}",
        (0..40)
            .map(|n| format!(r#""k{n:02}":[]"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let shapes = [
        "0",
        "[]",
        "{}",
        r#""""#,
        r#"{"":0}"#,
        r#"{"a":0,"b":0,"c":0,"d":0,"e":0,"f":0,"g":0,"h":0,"i":0,"j":0,"k":0,"l":0}"#,
        r#"[[[[0]]]]"#,
        r#""a""#,
        nested.as_str(),
        wide.as_str(),
    ];
    // Sizes either side of where the budget's floor stops covering a dense value.
    for unit in shapes {
        for len in [4 * 1024, 10 * 1024, 256 * 1024, 4 * 1024 * 1024] {
            check::<Holder>(unit, &body(unit, len));
        }
    }
    // Whole pushes, their records written as arrays of their members: a field of an action in
    // nine bytes, a change in a few dozen, an action of one field in a hundred; lists of a
    // block and one record more.
    let device = "00000000-0000-0000-0000-000000000001";
    let stamp = format!("018bcfe568000001@{device}");
    let field = r#"[0,"",0]"#;
    let change = format!(r#"[{{"device":"{device}","counter":1}},"","{device}","",0,"{stamp}"]"#);
    let action = format!(r#"["","{device}","{stamp}",[{field}]]"#);
    let push = |changes: &str, actions: &str| {
        format!(
            r#"{{"protocol":3,"device":"{device}","changes":[{changes}],"actions":[{actions}]}}"#
        )
    };
    for len in [4 * 1024, 256 * 1024, 4 * 1024 * 1024] {
        let fields = vec![field; len / (field.len() + 1)].join(",");
        let one =
            format!(r#"{{"kind":"","entity":"{device}","stamp":"{stamp}","fields":[{fields}]}}"#);
        check::<PushRequest>("fields", &push("", &one));
        let changes = vec![change.as_str(); len / (change.len() + 1)].join(",");
        check::<PushRequest>("changes", &push(&changes, ""));
        let actions = vec![action.as_str(); len / (action.len() + 1)].join(",");
        check::<PushRequest>("actions", &push("", &actions));
    }
    for n in [1_025, 2_049, 3_073] {
        let changes = vec![change.as_str(); n].join(",");
        assert!(!check::<PushRequest>(
            "a block and one",
            &push(&changes, "")
        ));
    }
    // The densest shapes are refused at size, not read: their parse would take many times the
    // body.
    for unit in ["0", r#"{"":0}"#, "[]"] {
        assert!(
            check::<Holder>(unit, &body(unit, 4 * 1024 * 1024)),
            "{unit}"
        );
    }
    // A phone's densest valid value, a list of one-letter names, fits in a push cut to 16 KiB.
    assert!(!check::<Holder>("names", &body(r#""a""#, 16 * 1024)));
}
