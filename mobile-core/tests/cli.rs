//! The `baylink` field client as an officer's script runs it: a real process on a real data
//! directory.

use std::process::{Command, Output};

use serde_json::Value;

struct Device {
    dir: tempfile::TempDir,
}

impl Device {
    fn new() -> Device {
        Device {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_baylink"))
            .arg("--data")
            .arg(self.dir.path())
            .args(args)
            .env_remove("BAYLINK_DATA")
            .output()
            .expect("baylink runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }
}

#[test]
fn capture_search_show_edit_and_list_from_the_command_line() {
    let d = Device::new();
    let id = d
        .ok(&[
            "capture",
            "person",
            "--id-number",
            "11010519491231002x",
            "--name",
            "王芳",
            "--phone",
            "138 0013 8000",
            "--village",
            "441303006001",
        ])
        .trim()
        .to_owned();
    let hits = d.json(&["search", "110105"]);
    assert_eq!(hits[0]["id"], id.as_str());
    let record = d.json(&["show", &id]);
    assert_eq!(record["fields"]["gender"], "female");
    assert_eq!(record["fields"]["phone"], "13800138000");
    let edited = d.json(&[
        "edit",
        "person",
        &id,
        "phone=13900139000",
        "occupation=厨师",
    ]);
    assert_eq!(edited["changed"], 2);
    assert_eq!(d.json(&["show", &id])["fields"]["occupation"], "厨师");
    let house = d.json(&[
        "capture",
        "house",
        "--address",
        "澳头石化大道1号",
        "--use",
        "出租",
        "--status",
        "in_use",
        "--village",
        "441303006001",
    ]);
    let rows = d.json(&["list", "house"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    assert_eq!(rows[0]["id"], house["id"]);
    let status = d.json(&["status"]);
    assert!(status["pending_changes"].as_u64().unwrap_or(0) > 10);
    assert!(d.ok(&["show", &id]).contains("女 (female)"));

    // A field named by its Chinese label, as the form shows it; a Hong Kong number, found as
    // a caller gives it (with or without its code, or its local eight digits).
    let edited = d.json(&[
        "edit",
        "person",
        &id,
        "职业=司机",
        "联系电话=+852 9123 4567",
    ]);
    assert_eq!(edited["changed"], 2);
    let fields = &d.json(&["show", &id])["fields"];
    assert_eq!(
        (&fields["occupation"], &fields["phone"]),
        (&"司机".into(), &"+85291234567".into())
    );
    for typed in ["+852 9123", "852 9123 4567", "9123 4567"] {
        assert_eq!(d.json(&["search", typed])[0]["id"], id.as_str(), "{typed}");
    }
    // Nothing found is said, not left to a blank screen.
    let none = d.run(&["search", "没有这个人"]);
    assert!(none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("未找到"));
}

#[test]
fn every_kind_can_be_captured_and_links_show_on_the_record() {
    let d = Device::new();
    let v = "441303006001";
    let json_id = |value: Value| value["id"].as_str().expect("id").to_owned();
    let person = json_id(d.json(&[
        "capture",
        "person",
        "--id-number",
        "11010519491231002X",
        "--name",
        "王芳",
        "--village",
        v,
    ]));
    let house = json_id(d.json(&[
        "capture",
        "house",
        "--address",
        "霞涌新村3号",
        "--use",
        "rental",
        "--status",
        "in_use",
        "--room-count",
        "6",
        "--location",
        "22.75,114.53",
        "--village",
        v,
    ]));
    let residence = json_id(d.json(&[
        "capture",
        "residence",
        "--person",
        &person,
        "--house",
        &house,
        "--moved-in",
        "2025-03-01",
        "--relation",
        "租客",
        "--village",
        v,
    ]));
    let vehicle = json_id(d.json(&[
        "capture",
        "vehicle",
        "--plate",
        "粤L·D12345",
        "--vehicle-type",
        "e_bike",
        "--owner",
        &person,
        "--village",
        v,
    ]));
    let visit = json_id(d.json(&[
        "capture",
        "visit",
        "--house",
        &house,
        "--time",
        "2026-11-20 15:30",
        "--outcome",
        "租客在家，登记无误",
        "--village",
        v,
    ]));
    let dispute = json_id(d.json(&[
        "capture",
        "dispute",
        "--parties",
        "王芳；李强",
        "--kind",
        "tenancy",
        "--description",
        "押金纠纷",
        "--status",
        "open",
        "--reported-on",
        "2026-11-21",
        "--house",
        &house,
        "--village",
        v,
    ]));
    let record = d.json(&["show", &house]);
    assert_eq!(record["fields"]["location"], "22.75,114.53");
    assert_eq!(record["fields"]["room_count"], "6");
    let mut incoming: Vec<String> = record["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            format!(
                "{}<-{}",
                l["field"].as_str().unwrap_or(""),
                l["record"]["id"].as_str().unwrap_or("")
            )
        })
        .collect();
    incoming.sort();
    let mut expected = vec![
        format!("house<-{residence}"),
        format!("house<-{visit}"),
        format!("house<-{dispute}"),
    ];
    expected.sort();
    assert_eq!(incoming, expected);
    assert_eq!(
        d.json(&["show", &dispute])["fields"]["parties"],
        "王芳;李强"
    );
    let person_links = d.json(&["show", &person])["links"].as_array().map(Vec::len);
    assert_eq!(
        person_links,
        Some(2),
        "residence and vehicle point at the person"
    );
    d.ok(&["delete", &vehicle]);
    assert_eq!(d.json(&["list", "vehicle"]), serde_json::json!([]));
    assert_eq!(
        d.json(&["show", &person])["links"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn a_full_page_says_how_to_see_more_help_names_the_default_and_show_follows_the_form() {
    let d = Device::new();
    for n in 1..=3 {
        d.ok(&[
            "capture",
            "house",
            "--address",
            &format!("澳头石化大道{n}号"),
            "--use",
            "出租",
            "--status",
            "in_use",
            "--village",
            "441303006001",
        ]);
    }
    // A page cut at its limit says so (on stderr: stdout stays one record a line).
    let stderr = |args: &[&str]| String::from_utf8_lossy(&d.run(args).stderr).into_owned();
    assert!(stderr(&["list", "house", "--limit", "2"]).contains("more with --offset 2"));
    assert!(!stderr(&["list", "house", "--limit", "2", "--offset", "2"]).contains("--offset"));
    assert!(stderr(&["search", "澳头", "--limit", "3"]).contains("raise --limit"));
    assert!(stderr(&["search", "澳头", "--limit", "4"]).is_empty());
    assert_eq!(d.ok(&["list", "house", "--limit", "2"]).lines().count(), 2);

    // The document type may be left out (it is a resident ID card then): not "required".
    let help = d.ok(&["capture", "person", "--help"]);
    let line = |flag: &str| {
        help.lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("--id-type").contains("(default resident_id)"),
        "{help}"
    );
    assert!(line("--id-number").contains("(required)"), "{help}");
    assert!(!line("--phone").contains("required"), "{help}");

    // A record's fields in the form's order: ID type before the number, the name before the
    // phone (not alphabetical: `id_number` < `id_type`, `name` < `phone` < `village`).
    let id = d
        .ok(&[
            "capture",
            "person",
            "--id-number",
            "11010519491231002x",
            "--name",
            "王芳",
            "--phone",
            "13800138000",
            "--village",
            "441303006001",
        ])
        .trim()
        .to_owned();
    let shown = d.ok(&["show", &id]);
    let at = |label: &str| {
        shown
            .find(label)
            .unwrap_or_else(|| panic!("{label}: {shown}"))
    };
    assert!(at("所属村") < at("证件类型"), "{shown}");
    assert!(at("证件类型") < at("证件号码"), "{shown}");
    assert!(at("姓名") < at("联系电话"), "{shown}");
}

#[test]
fn capturing_someone_registered_before_changes_nothing_unless_asked_to_update() {
    let d = Device::new();
    let person = |name: &str, update: bool| {
        let mut args = vec![
            "capture",
            "person",
            "--id-number",
            "11010519491231002x",
            "--name",
            name,
            "--village",
            "441303006001",
        ];
        if update {
            args.push("--update");
        }
        d.run(&args)
    };
    let first = person("王芳", false);
    assert!(first.status.success());
    let id = String::from_utf8_lossy(&first.stdout).trim().to_owned();
    // A slip in the name, registering her again: refused, naming her and the way to update.
    let slip = person("王方", false);
    let err = String::from_utf8_lossy(&slip.stderr);
    assert_eq!(slip.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&id) && err.contains("--update") && err.contains("nothing was saved"),
        "{err}"
    );
    assert_eq!(d.json(&["show", &id])["fields"]["name"], "王芳");
    // Asked to, it updates her.
    let updated = person("王方", true);
    assert!(updated.status.success(), "{updated:?}");
    assert!(String::from_utf8_lossy(&updated.stderr).contains("updated: name"));
    assert_eq!(d.json(&["show", &id])["fields"]["name"], "王方");
    // The same values again change nothing: taken, as before.
    let again = person("王方", false);
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing changed"));
}

#[test]
fn bad_input_exits_non_zero_names_the_field_and_saves_nothing() {
    let d = Device::new();
    let out = d.run(&[
        "capture",
        "person",
        "--id-number",
        "110105194912310021",
        "--name",
        "王芳",
        "--village",
        "441303006001",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[id_number]")
            && stderr.contains("校验位")
            && stderr.contains("check character"),
        "{stderr}"
    );
    assert_eq!(d.json(&["status"])["pending_changes"], 0);
    assert_eq!(d.json(&["search", "王芳"]), serde_json::json!([]));

    let out = d.run(&[
        "capture",
        "vehicle",
        "--plate",
        "粤I12345",
        "--vehicle-type",
        "car",
        "--village",
        "441303006001",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[plate]"));

    // With --json, the error comes as JSON on standard output too.
    let out = d.run(&[
        "--json",
        "capture",
        "person",
        "--id-number",
        "110105194912310021",
        "--name",
        "王芳",
        "--village",
        "441303006001",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert_eq!(error["error"]["code"], "invalid");
    assert_eq!(error["error"]["fields"][0]["field"], "id_number");

    let out = d.run(&["show", "not-an-id"]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.run(&[
        "edit",
        "person",
        "0190c1f4-0000-7000-8000-000000000001",
        "name",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FIELD=VALUE"));
}

#[test]
fn with_a_passphrase_the_client_keeps_its_store_encrypted() {
    let d = Device::new();
    let run = |passphrase: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_baylink"))
            .arg("--data")
            .arg(d.dir.path())
            .args(args)
            .env_remove("BAYLINK_DATA")
            .env("BAYLINK_PASSPHRASE", passphrase)
            .output()
            .expect("baylink runs")
    };
    let captured = run(
        "口令",
        &[
            "capture",
            "person",
            "--id-number",
            "11010519491231002x",
            "--name",
            "王芳",
            "--village",
            "441303006001",
        ],
    );
    assert!(
        captured.status.success(),
        "{}",
        String::from_utf8_lossy(&captured.stderr)
    );
    let found = run("口令", &["search", "110105"]);
    assert!(String::from_utf8_lossy(&found.stdout).contains("王芳"));
    let refused = run("wrong", &["search", "110105"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("wrong passphrase"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
