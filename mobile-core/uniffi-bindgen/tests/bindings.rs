//! Generates the Kotlin, Swift and Python bindings of mobile-core with this workspace's
//! `uniffi-bindgen`, then drives the library through the Python binding as an app would: on its
//! own, and syncing with a real server on loopback over a slow link.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Runs a Python test script from this folder with the binding's directory and `args`; panics
/// with its output unless it passes.
fn run_python(out: &Path, lib: &Path, script: &str, args: &[&str]) -> String {
    // The Python loader looks for the library beside the module.
    let beside = out.join(lib.file_name().expect("file name"));
    if !beside.exists() {
        std::fs::copy(lib, beside).expect("library copied");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(out)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    // A store that deadlocks (a callback waiting for a lock its caller holds) fails the test
    // rather than hanging it.
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("python3 waited for").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("python test {} still running after 180 s", script.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = child.wait_with_output().expect("python3's output");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "python test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    stdout
}

/// An app's screens while a sync crawls: through the binding, lists answer within 50 ms while
/// a sync takes seconds over a slow link (the sync on a connection of its own), the progress
/// callback reads the store without deadlock, listeners hear local writes and the sync's pages,
/// and a sync cancelled part way leaves a store the next sync completes.
#[test]
fn through_the_binding_the_store_answers_while_a_slow_sync_runs_and_tells_its_listeners() {
    use baylink_tests::harness::{Device, PASSWORD, Server, VILLAGE, input, resident_id};

    const HELD: usize = 2_000;
    let server = Server::start();
    server.add_officer("o_app", VILLAGE);
    let mut seeder = Device::new("o_app");
    seeder.login(&server, "o_app");
    let persons: Vec<_> = (0..HELD)
        .map(|i| {
            let id = resident_id(&format!("4413031990{:04}{:03}", 101 + i / 1000, i % 1000));
            let name = format!("住户{i}");
            input(&[
                ("village", VILLAGE),
                ("id_number", &id),
                ("name", &name),
                ("phone", "13800138000"),
                ("occupation", "渔民"),
            ])
        })
        .collect();
    seeder
        .store
        .capture_many(baylink_domain::EntityKind::Person, &persons)
        .expect("the village's persons captured");
    seeder.sync();
    // About 6 bytes a value compressed: the village's 30,000 values take several seconds.
    let link = baylink_tests::slow_link::SlowLink::start(&server.url, 24 * 1024);

    let lib = library();
    let out = tempfile::tempdir().expect("temporary directory");
    generate(&lib, out.path());
    let held = HELD.to_string();
    let said = run_python(
        out.path(),
        &lib,
        "test_sync_binding.py",
        &[&link.url, "o_app", PASSWORD, &held],
    );
    print!("{said}");
}

#[test]
fn bindings_generate_for_kotlin_swift_and_python_and_the_python_one_works() {
    let lib = library();
    let out = tempfile::tempdir().expect("temporary directory");
    generate(&lib, out.path());

    let kotlin = out.path().join("cn/baylink/mobilecore/mobile_core.kt");
    let kotlin = std::fs::read_to_string(&kotlin).expect("Kotlin binding written");
    assert!(
        kotlin.contains("class FieldStore") && kotlin.contains("fun `capture`("),
        "Kotlin API"
    );
    let swift = std::fs::read_to_string(out.path().join("BaylinkMobileCore.swift"))
        .expect("Swift binding written");
    assert!(
        swift.contains("class FieldStore") && swift.contains("func capture("),
        "Swift API"
    );

    run_python(out.path(), &lib, "test_binding.py", &[]);
}

/// The Kotlin compiler: `BAYLINK_KOTLINC`, or where `./scripts/test` installs it from the npm
/// registry (`kotlin-compiler`, beside Debian's OpenJDK and `libjna-java`).
fn kotlinc() -> PathBuf {
    let installed = std::env::var_os("HOME").map(|home| {
        PathBuf::from(home).join(".cache/baylink/kotlin/node_modules/kotlin-compiler/bin/kotlinc")
    });
    std::env::var_os("BAYLINK_KOTLINC")
        .map(PathBuf::from)
        .or(installed)
        .filter(|p| p.exists())
        .expect("kotlinc: ./scripts/test installs it (npm install --prefix ~/.cache/baylink/kotlin kotlin-compiler), or set BAYLINK_KOTLINC")
}

/// JNA, through which the Kotlin binding calls the library (Debian's `libjna-java`).
const JNA: &str = "/usr/share/java/jna.jar";

/// The Kotlin binding, compiled with the example app's code (`examples/kotlin`) as an Android
/// app would compile them, run on the JVM against a real server on loopback: it signs in,
/// builds a form from the data model, decodes an ID number as typed, saves a wrong form and a
/// right one, syncs in the background while its list reads, hears the changes, and is told
/// an unreachable server is one.
#[test]
fn the_kotlin_binding_compiles_with_the_example_app_and_runs_it_against_a_real_server() {
    use baylink_tests::harness::{PASSWORD, Server, VILLAGE};

    assert!(
        Path::new(JNA).exists(),
        "{JNA}: apt-get install libjna-java"
    );
    let lib = library();
    let out = tempfile::tempdir().expect("temporary directory");
    generate(&lib, out.path());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kotlin");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&examples)
        .expect("examples/kotlin")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "kt"))
        .collect();
    sources.push(out.path().join("cn/baylink/mobilecore/mobile_core.kt"));
    let jar = out.path().join("app.jar");
    let compiled = Command::new(kotlinc())
        .args(["-nowarn", "-cp", JNA, "-include-runtime", "-d"])
        .arg(&jar)
        .args(&sources)
        .output()
        .expect("kotlinc runs");
    assert!(
        compiled.status.success(),
        "kotlinc failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    std::fs::copy(&lib, out.path().join(lib.file_name().expect("file name")))
        .expect("library copied");

    let server = Server::start();
    server.add_officer("o_kotlin", VILLAGE);
    let phone = out.path().join("phone");
    std::fs::create_dir(&phone).expect("phone directory");
    let ran = Command::new("java")
        .arg(format!("-Djna.library.path={}", out.path().display()))
        .arg("-cp")
        .arg(format!("{}:{JNA}", jar.display()))
        .arg("cn.baylink.example.MainKt")
        .args([server.url.as_str(), "o_kotlin", PASSWORD])
        .arg(&phone)
        .output()
        .expect("java runs");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success() && stdout.contains(" passed, 0 failed"),
        "the Kotlin example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    print!("{stdout}");
}
