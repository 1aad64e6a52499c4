//! The benchmark's command line: a mistyped option is refused at once, not taken for a full run
//! of most of an hour.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baylink-bench"))
        .args(args)
        .output()
        .expect("the benchmark runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

#[test]
fn help_prints_the_usage_and_runs_nothing() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("usage: baylink-bench"), "{stdout}");
    assert!(!stdout.contains("district at scale"), "{stdout}");
}

#[test]
fn unknown_options_and_bad_numbers_are_refused() {
    for args in [&["--scal", "0.1"][..], &["--scale"], &["--scale", "tiny"]] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stdout}");
        assert!(stderr.contains("baylink-bench: "), "{args:?}: {stderr}");
        assert!(!stdout.contains("district at scale"), "{args:?}: {stdout}");
    }
}
