//! Generates the Kotlin, Swift and Python bindings of mobile-core with this workspace's
//! `uniffi-bindgen`, then drives the library through the Python binding as an app would.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The mobile-core shared library that this test build linked beside it.
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    let name = format!(
        "{}mobile_core{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    [deps.parent().map(|p| p.join(&name)), Some(deps.join(&name))]
        .into_iter()
        .flatten()
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("{name} not found near {}", deps.display()))
}

fn generate(lib: &Path, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen"))
        .arg("generate")
        .arg(lib)
        .args([
            "--language",
            "kotlin",
            "--language",
            "swift",
            "--language",
            "python",
        ])
        .args(["--no-format", "--out-dir"])
        .arg(out)
        .status()
        .expect("uniffi-bindgen runs");
    assert!(status.success(), "uniffi-bindgen failed");
}

#[test]
fn bindings_generate_for_kotlin_swift_and_python_and_the_python_one_works() {
    let lib = library();
    let out = tempfile::tempdir().expect("temporary directory");
    generate(&lib, out.path());

    let kotlin = out.path().join("uniffi/mobile_core/mobile_core.kt");
    let kotlin = std::fs::read_to_string(&kotlin).expect("Kotlin binding written");
    assert!(
        kotlin.contains("class FieldStore") && kotlin.contains("fun `capture`("),
        "Kotlin API"
    );
    let swift = std::fs::read_to_string(out.path().join("mobile_core.swift"))
        .expect("Swift binding written");
    assert!(
        swift.contains("class FieldStore") && swift.contains("func capture("),
        "Swift API"
    );

    // The Python loader looks for the library beside the module.
    std::fs::copy(&lib, out.path().join(lib.file_name().expect("file name")))
        .expect("library copied");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/test_binding.py");
    let run = Command::new("python3")
        .arg(script)
        .arg(out.path())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "python test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
