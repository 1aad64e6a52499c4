//! Officers capture offline on separate phones; their changes meet later. The same person must
//! end as one record, every replica identical field by field, and concurrent edits recognised.

use baylink_domain::EntityKind;
use baylink_tests::harness::{Device, VILLAGE, resident_id, send};
use proptest::prelude::*;

fn capture_same_person(a: &mut Device, b: &mut Device) -> (uuid::Uuid, uuid::Uuid) {
    let pa = a.capture(
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", "11010519491231002X"),
            ("name", "王芳"),
            ("phone", "13800138000"),
        ],
    );
    // The other officer types it differently and knows other things about her.
    let pb = b.capture(
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_type", "居民身份证"),
            ("id_number", "110105 19491231 002x"),
            ("name", "王 芳"),
            ("occupation", "厨师"),
        ],
    );
    (pa, pb)
}

#[test]
fn the_same_person_captured_on_two_offline_phones_ends_as_one_identical_record() {
    for a_first in [true, false] {
        let (mut a, mut b) = (Device::new("officer-a"), Device::new("officer-b"));
        b.clock.advance(60_000);
        let (pa, pb) = capture_same_person(&mut a, &mut b);
        assert_eq!(pa, pb, "one person, one id");
        if a_first {
            send(&a, &mut b);
            send(&b, &mut a);
        } else {
            send(&b, &mut a);
            send(&a, &mut b);
        }
        assert_eq!(
            a.states(),
            b.states(),
            "replicas differ (a first: {a_first})"
        );
        assert_eq!(a.states().len(), 1);
        let fields = &a.store.get(pa).unwrap().unwrap().fields;
        // Fields both captured take the later write (B's clock ran a minute later); the rest
        // are the union of what each officer knew.
        assert_eq!(fields["name"], "王芳");
        assert_eq!(fields["phone"], "13800138000");
        assert_eq!(fields["occupation"], "厨师");
        assert_eq!(fields["created_by"], "officer-b");
    }
}

#[test]
fn a_concurrent_edit_of_one_field_is_detected_and_converges() {
    let (mut a, mut b) = (Device::new("officer-a"), Device::new("officer-b"));
    let (id, _) = capture_same_person(&mut a, &mut b);
    send(&a, &mut b);
    send(&b, &mut a);
    // Both now hold the same record; each edits the phone while offline.
    a.clock.advance(10_000);
    b.clock.advance(20_000);
    let (a_before, b_before) = (
        a.store.outbox(usize::MAX).unwrap().len(),
        b.store.outbox(usize::MAX).unwrap().len(),
    );
    a.edit(id, &[("phone", "13900139000")]);
    b.edit(id, &[("phone", "13700137000")]);
    let a_edit = a.store.outbox(usize::MAX).unwrap().split_off(a_before);
    let b_edit = b.store.outbox(usize::MAX).unwrap().split_off(b_before);
    let at_b = b.store.apply_remote(&a_edit).unwrap();
    let at_a = a.store.apply_remote(&b_edit).unwrap();
    for report in [&at_a, &at_b] {
        assert_eq!(report.concurrent.len(), 1, "{report:?}");
        assert_eq!(report.concurrent[0].field, "phone");
        assert_eq!(report.concurrent[0].kept.value, "13700137000");
        assert_eq!(report.concurrent[0].lost.value, "13900139000");
    }
    assert_eq!(a.states(), b.states());

    // A sequential edit (B saw A's value, then changed it) is not a conflict.
    a.clock.advance(60_000);
    let before = a.store.outbox(usize::MAX).unwrap().len();
    a.edit(id, &[("phone", "13600136000")]);
    let next = a.store.outbox(usize::MAX).unwrap().split_off(before);
    let report = b.store.apply_remote(&next).unwrap();
    assert!(report.concurrent.is_empty(), "{report:?}");
    assert_eq!(
        b.store.get(id).unwrap().unwrap().fields["phone"],
        "13600136000"
    );
}

/// What an officer does in a schedule step.
#[derive(Clone, Debug)]
enum Step {
    Capture {
        device: usize,
        person: usize,
        name: usize,
    },
    Edit {
        device: usize,
        person: usize,
        phone: u8,
    },
    Delete {
        device: usize,
        person: usize,
    },
    Send {
        from: usize,
        to: usize,
    },
    Tick {
        device: usize,
        ms: u32,
    },
}

const PEOPLE: [&str; 3] = [
    "11010519491231002X",
    "44130319900101123X",
    "440306198802290017",
];
const NAMES: [&str; 3] = ["王芳", "李强", "陈静"];

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 0..3usize, 0..3usize).prop_map(|(device, person, name)| Step::Capture {
            device,
            person,
            name
        }),
        (0..3usize, 0..3usize, 0..5u8).prop_map(|(device, person, phone)| Step::Edit {
            device,
            person,
            phone
        }),
        (0..3usize, 0..3usize).prop_map(|(device, person)| Step::Delete { device, person }),
        (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Send { from, to }),
        (0..3usize, 0..5_000u32).prop_map(|(device, ms)| Step::Tick { device, ms }),
    ]
}

fn valid_people() -> Vec<String> {
    // The check characters are computed, so the numbers above need only their first 17 digits right.
    PEOPLE.iter().map(|p| resident_id(&p[..17])).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Three phones, random captures, edits and deletes of overlapping people, random partial
    /// exchanges (repeats included); once everyone has everyone's changes, all are identical.
    #[test]
    fn three_phones_converge_whatever_the_schedule(steps in prop::collection::vec(arb_step(), 1..30)) {
        let people = valid_people();
        let mut devices: Vec<Device> = (0..3).map(|i| Device::new(&format!("officer-{i}"))).collect();
        for step in steps {
            match step {
                Step::Capture { device, person, name } => {
                    let fields = [("village", VILLAGE), ("id_number", people[person].as_str()), ("name", NAMES[name])];
                    let captured = devices[device]
                        .store
                        .capture(EntityKind::Person, &baylink_tests::harness::input(&fields));
                    // A phone holding another record with the number (a fresh id taken when an
                    // edit alone had reached it under her natural id) refuses a second record of
                    // her, naming the first; anything else is a failure.
                    if let Err(e) = captured {
                        let duplicate = matches!(
                            &e,
                            mobile_core::Error::Invalid(baylink_domain::Error::Invalid(problems))
                                if problems.iter().all(|p| p.code == "duplicate")
                        );
                        prop_assert!(duplicate, "{}", e);
                    }
                }
                Step::Edit { device, person, phone } => {
                    let hit = devices[device].store.search(&people[person], 1).unwrap();
                    if let Some(hit) = hit.first() {
                        let phone = format!("1380013800{phone}");
                        devices[device].edit(hit.id.parse().unwrap(), &[("phone", &phone)]);
                    }
                }
                Step::Delete { device, person } => {
                    let hit = devices[device].store.search(&people[person], 1).unwrap();
                    if let Some(hit) = hit.first() {
                        devices[device].store.delete(hit.id.parse().unwrap()).unwrap();
                    }
                }
                Step::Send { from, to } if from != to => {
                    let (src, dst) = if from < to {
                        let (l, r) = devices.split_at_mut(to);
                        (&l[from], &mut r[0])
                    } else {
                        let (l, r) = devices.split_at_mut(from);
                        (&r[0], &mut l[to])
                    };
                    send(src, dst);
                }
                Step::Send { .. } => {}
                Step::Tick { device, ms } => devices[device].clock.advance(u64::from(ms)),
            }
        }
        for from in 0..3 {
            for to in 0..3 {
                if from != to {
                    let changes = devices[from].store.outbox(usize::MAX).unwrap();
                    devices[to].store.apply_remote(&changes).unwrap();
                }
            }
        }
        let first = devices[0].states();
        prop_assert_eq!(&devices[1].states(), &first);
        prop_assert_eq!(&devices[2].states(), &first);
    }
}
