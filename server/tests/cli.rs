//! The `baylink-server` binary as an administrator runs it: `serve --demo` on a free loopback
//! port answering `/healthz`, and the account, device and backup commands.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

mod support;
use support::server;

fn run(data: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = server(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baylink-server runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let out = child.wait_with_output().expect("exits");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn serve_demo_seeds_prints_the_accounts_and_answers_healthz() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut child = server(dir.path())
        .args([
            "serve",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--secure-cookies",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = String::new();
    let address = loop {
        let line = lines
            .next()
            .expect("server printed its address")
            .expect("UTF-8");
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.strip_prefix("baylink-server listening on http://") {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    assert!(
        printed.contains("o006001") && printed.contains("baylink-demo"),
        "{printed}"
    );
    let mut stream = TcpStream::connect(&address).expect("connects on loopback");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    // A reviewer signs in to the console: the cookie is `Secure` as asked, and console answers
    // are not to be cached, framed or sniffed.
    let mut stream = TcpStream::connect(&address).expect("connects on loopback");
    stream
        .write_all(b"GET /console/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("answer");
    let cookie = page
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .expect("the sign-in form's cookie")
        .to_owned();
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-in form's token");
    let form = format!("username=r006&password=baylink-demo&csrf={token}");
    let mut stream = TcpStream::connect(&address).expect("connects on loopback");
    write!(
        stream,
        "POST /console/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .expect("request");
    let mut signed_in = String::new();
    stream.read_to_string(&mut signed_in).expect("answer");
    child.kill().expect("stopped");
    let _ = child.wait();
    let head = signed_in
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 303"), "{head}");
    assert!(
        head.lines()
            .any(|l| l.starts_with("set-cookie:") && l.contains("; secure")),
        "{head}"
    );
    for header in [
        "cache-control: no-store",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
    ] {
        assert!(head.contains(header), "{header}: {head}");
    }
    // The data directory and the database are the server's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| {
            std::fs::metadata(p).expect("exists").permissions().mode() & 0o777
        };
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join("baylink.db")), 0o600);
        // The token keys are in the database: no key file is written.
        assert!(!dir.path().join("secret.key").exists());
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    // The demo's records are there: the sequence (a number per record written) has moved far
    // past zero.
    let seq: u64 = answer
        .split("\"seq\":")
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(seq > 2_000, "{answer}");
}

#[test]
fn accounts_are_managed_with_passwords_on_stdin_and_the_database_backs_up() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let (ok, out, err) = run(
        &data,
        &["user", "add", "chen", "--role", "admin", "--name", "陈管理"],
        "a long enough password\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("added chen"));
    let (ok, _, err) = run(
        &data,
        &["user", "add", "short", "--role", "admin"],
        "short\n",
    );
    assert!(!ok && err.contains("at least 8"), "{err}");
    let (ok, _, err) = run(
        &data,
        &["user", "add", "chen", "--role", "admin"],
        "a long enough password\n",
    );
    assert!(!ok && err.contains("taken"), "{err}");
    let (ok, _, err) = run(
        &data,
        &[
            "user",
            "add",
            "li",
            "--role",
            "officer",
            "--villages",
            "441303006001",
        ],
        "a long enough password\n",
    );
    assert!(
        !ok && err.contains("441303006001"),
        "unknown village accepted: {err}"
    );
    let (_, out, _) = run(&data, &["user", "list"], "");
    assert!(
        out.contains("chen") && out.contains("admin") && out.contains("active"),
        "{out}"
    );
    let (ok, _, err) = run(&data, &["user", "password", "chen"], "short\n");
    assert!(!ok && err.contains("at least 8"), "{err}");
    let (ok, out, err) = run(
        &data,
        &["user", "password", "chen"],
        "another long password\n",
    );
    assert!(ok && out.contains("new password set for chen"), "{err}");
    let (ok, _, err) = run(
        &data,
        &["user", "password", "nobody"],
        "another long password\n",
    );
    assert!(!ok && err.contains("nobody"), "{err}");
    let (ok, out, err) = run(&data, &["compact", "--idle-days", "30"], "");
    assert!(
        ok && out.contains("compacted up to sequence number"),
        "{out}{err}"
    );
    let (ok, _, err) = run(&data, &["compact", "--idle-days", "0"], "");
    assert!(!ok && err.contains("idle-days"), "{err}");
    let (ok, _, _) = run(&data, &["user", "disable", "chen"], "");
    assert!(ok);
    let (_, out, _) = run(&data, &["user", "list"], "");
    assert!(out.contains("disabled"), "{out}");
    let (ok, _, err) = run(
        &data,
        &["device", "revoke", "00000000-0000-4000-8000-000000000001"],
        "",
    );
    assert!(!ok && err.contains("no device"), "{err}");
    let (ok, _, err) = run(&data, &["show", "00000000-0000-4000-8000-000000000001"], "");
    assert!(!ok && err.contains("no record"), "{err}");
    let copy = dir.path().join("copy.db");
    let (ok, _, err) = run(&data, &["backup", copy.to_str().expect("path")], "");
    assert!(ok, "{err}");
    // The copy holds the token keys: its owner's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).expect("copy").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Restored by root into the data directory of the service's own user (where the test runs as
    // root): the files it writes are that user's, or the service could not open them.
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).expect("dir");
    #[cfg(unix)]
    let service = std::os::unix::fs::chown(&restored, Some(10_001), Some(10_001)).is_ok();
    let (ok, out, err) = run(&restored, &["restore", copy.to_str().expect("path")], "");
    assert!(
        ok && out.contains("redo the device revocations"),
        "{out}{err}"
    );
    #[cfg(unix)]
    if service {
        use std::os::unix::fs::MetadataExt;
        for name in ["baylink.db", "serve.lock"] {
            let file = std::fs::metadata(restored.join(name)).expect(name);
            assert_eq!((file.uid(), file.gid()), (10_001, 10_001), "{name}");
        }
    }
    let (_, out, _) = run(&restored, &["user", "list"], "");
    assert!(out.contains("chen"), "the backup holds the accounts: {out}");
    // Both audited: the backup in the database it copied, the restore in the one put back.
    let (_, out, _) = run(&data, &["audit", "export"], "");
    assert!(out.contains(",backup,") && out.contains("copy.db"), "{out}");
    let (_, out, _) = run(&restored, &["audit", "export"], "");
    assert!(
        out.contains(",restore,") && out.contains("copy.db"),
        "{out}"
    );
}

#[test]
fn a_fresh_server_is_given_its_places_before_its_officers() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let officer = [
        "user",
        "add",
        "wang",
        "--role",
        "officer",
        "--station",
        "441303006",
        "--villages",
        "441303006001",
    ];
    let (ok, _, err) = run(&data, &officer, "a long enough password\n");
    assert!(
        !ok && err.contains("station `441303006` does not exist") && err.contains("station import"),
        "{err}"
    );
    let (ok, out, err) = run(&data, &["station", "import"], "");
    assert!(ok, "{err}");
    assert!(out.contains("3 stations and 64 villages"), "{out}");
    let (ok, out, err) = run(&data, &officer, "a long enough password\n");
    assert!(ok && out.contains("added wang"), "{err}");

    // Lists of the administrator's own.
    let list = dir.path().join("places.csv");
    let import = |text: &str| {
        std::fs::write(&list, text).expect("list written");
        run(
            &data,
            &["station", "import", list.to_str().expect("path")],
            "",
        )
    };
    // A new street and its village.
    let (ok, out, err) = import(
        "code,name,level,parent\n441303100,新城街道,street,441303\n441303100001,新城社区居民委员会,village,441303100\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("1 stations and 1 villages"), "{out}");
    let (_, out, _) = run(&data, &["station", "list"], "");
    assert!(
        out.contains("441303100 新城派出所 (1 villages)")
            && out.contains("441303100001 新城社区居民委员会"),
        "{out}"
    );
    let (ok, _, err) = import("code,name,level,parent\n441303100001,新城社区,village,441303999\n");
    assert!(
        !ok && err.contains("line 2: parent: no station `441303999`"),
        "{err}"
    );
}

#[test]
fn a_listing_read_only_in_part_ends_quietly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let (ok, _, err) = run(&data, &["station", "import"], "");
    assert!(ok, "{err}");
    // As `baylink-server station list | head -1` does: the reader goes away before the list
    // is written (the pipe is closed here before the command has opened its database).
    let mut child = server(&data)
        .args(["station", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baylink-server runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("exits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.is_empty(),
        "{:?}: {err}",
        out.status
    );
}

#[test]
fn token_keys_are_added_listed_and_retired_and_the_old_key_file_is_the_first() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // A data directory from before keys were kept in the database.
    std::fs::create_dir_all(dir.path()).expect("data directory");
    std::fs::write(dir.path().join("secret.key"), "a".repeat(64)).expect("old key file");
    // A mistyped --data is not taken for a new server.
    let (ok, _, err) = run(&dir.path().join("typo"), &["key", "list"], "");
    assert!(
        !ok && err.contains("is --data (or --database) right?"),
        "{err}"
    );
    assert!(!dir.path().join("typo").join("baylink.db").exists());
    let (ok, out, err) = run(dir.path(), &["migrate"], "");
    assert!(ok && out.contains("created the database"), "{err}");
    let list = |expect: usize| {
        let (ok, out, err) = run(dir.path(), &["key", "list"], "");
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), expect, "{out}");
        out
    };
    let listed = list(1);
    let old = listed.split_whitespace().next().expect("key id").to_owned();
    assert!(listed.contains("signs"), "{listed}");
    let (ok, out, err) = run(dir.path(), &["key", "add"], "");
    assert!(ok, "{err}");
    let new = out
        .strip_prefix("added ")
        .and_then(|rest| rest.split(':').next())
        .expect("new key id")
        .to_owned();
    let listed = list(2);
    assert!(
        listed.contains(&format!("{old}  added"))
            && listed
                .lines()
                .next()
                .is_some_and(|l| l.ends_with("verifies"))
            && listed
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with(&new) && l.ends_with("signs")),
        "{listed}"
    );
    let (ok, _, err) = run(dir.path(), &["key", "retire", &new], "");
    assert!(!ok && err.contains("it signs now"), "{err}");
    // The new key was added a moment ago: servers may still sign with the old one.
    let (ok, _, err) = run(dir.path(), &["key", "retire", &old], "");
    assert!(!ok && err.contains("--at-once"), "{err}");
    let (ok, out, err) = run(dir.path(), &["key", "retire", &old, "--at-once"], "");
    assert!(ok && out.contains(&old), "{err}");
    assert!(
        list(2)
            .lines()
            .next()
            .is_some_and(|l| l.contains("retired"))
    );
    let (ok, _, err) = run(dir.path(), &["key", "retire", &old, "--at-once"], "");
    assert!(!ok && err.contains("retired already"), "{err}");
    let (ok, _, err) = run(dir.path(), &["key", "retire", "k000000000000"], "");
    assert!(!ok && err.contains("no token key"), "{err}");
    // No secret is printed.
    let (ok, out, err) = run(dir.path(), &["key", "list"], "");
    assert!(ok && !out.contains(&"a".repeat(32)) && !err.contains(&"a".repeat(32)));
}

#[test]
fn settings_come_from_a_file_the_environment_and_flags_and_config_check_says_which() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("server.toml");
    let data = dir.path().join("data");
    // A relative data directory is the file's neighbour, not the working directory's.
    std::fs::write(
        &file,
        "data = \"data\"\nlisten = \"127.0.0.1:0\"\naccess_ttl_s = 600\nmax_connections = 50\n",
    )
    .expect("file written");
    let out = Command::new(env!("CARGO_BIN_EXE_baylink-server"))
        .args(["--config", file.to_str().expect("path"), "config", "check"])
        .env_remove("BAYLINK_SERVER_DATA")
        .env("BAYLINK_MAX_CONNECTIONS", "70")
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{said}");
    let line = |key: &str| {
        said.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("access_ttl_s"), "access_ttl_s = 600 (file)");
    assert_eq!(
        line("max_connections"),
        "max_connections = 70 (environment)"
    );
    assert_eq!(line("refresh_ttl_s"), "refresh_ttl_s = 2592000 (default)");
    // The file's data directory is the one the commands use: a user added goes there.
    let (ok, _, err) = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_baylink-server"))
            .args([
                "--config",
                file.to_str().expect("path"),
                "user",
                "add",
                "chen",
                "--role",
                "admin",
            ])
            .env_remove("BAYLINK_SERVER_DATA")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"a long password\n")
            .expect("password");
        let out = child.wait_with_output().expect("exits");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(ok, "{err}");
    assert!(data.join("baylink.db").exists());
    // A flag wins over the file; `config check` takes serve's flags, to show what it would run.
    let (ok, out, _) = run(&dir.path().join("elsewhere"), &["config", "check"], "");
    assert!(ok && out.contains("(flag)"), "{out}");
    let (ok, out, _) = run(
        &data,
        &[
            "config",
            "check",
            "--listen",
            "127.0.0.1:9911",
            "--drain-seconds",
            "3",
        ],
        "",
    );
    assert!(
        ok && out.contains("127.0.0.1:9911") && out.contains("drain_s            = 3 "),
        "{out}"
    );
    // A key the file should not have stops everything, naming it.
    std::fs::write(&file, "acces_ttl_s = 600\n").expect("file written");
    let out = Command::new(env!("CARGO_BIN_EXE_baylink-server"))
        .args(["--config", file.to_str().expect("path"), "serve"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `acces_ttl_s`"));
}

#[test]
fn a_backup_never_overwrites_the_database_or_an_earlier_backup_unasked() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let (ok, _, err) = run(&data, &["migrate"], "");
    assert!(ok, "{err}");
    let live = data.join("baylink.db");
    let (ok, _, err) = run(&data, &["backup", live.to_str().expect("path")], "");
    assert!(!ok && err.contains("the database itself"), "{err}");
    let copy = dir.path().join("copy.db");
    let (ok, _, err) = run(&data, &["backup", copy.to_str().expect("path")], "");
    assert!(ok, "{err}");
    let (ok, _, err) = run(&data, &["backup", copy.to_str().expect("path")], "");
    assert!(!ok && err.contains("--force"), "{err}");
    let (ok, _, err) = run(
        &data,
        &["backup", copy.to_str().expect("path"), "--force"],
        "",
    );
    assert!(ok, "{err}");
}

#[test]
fn a_restore_takes_what_the_backups_own_log_holds_and_one_that_fails_leaves_the_database() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let (ok, _, err) = run(&data, &["migrate"], "");
    assert!(ok, "{err}");
    let copy = dir.path().join("copy.db");
    let (ok, _, err) = run(&data, &["backup", copy.to_str().expect("path")], "");
    assert!(ok, "{err}");
    // A commit still in the backup's own log (a filesystem snapshot, or a database moved aside
    // by an earlier restore, taken before its last checkpoint).
    let conn = rusqlite::Connection::open(&copy).expect("the copy");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .expect("no checkpoint");
    conn.execute("UPDATE meta SET value = '9999' WHERE key = 'seq'", [])
        .expect("a commit");
    assert!(copy.with_file_name("copy.db-wal").exists());
    let (ok, out, err) = run(&data, &["verify", copy.to_str().expect("path")], "");
    assert!(ok && out.contains("9999"), "{out}{err}");

    let restored = dir.path().join("restored");
    let (ok, out, err) = run(&restored, &["restore", copy.to_str().expect("path")], "");
    assert!(ok, "{out}{err}");
    drop(conn);
    let live = restored.join("baylink.db");
    let (ok, out, err) = run(&restored, &["verify", live.to_str().expect("path")], "");
    assert!(
        ok && out.contains("9999"),
        "the log's commit came too: {out}{err}"
    );

    // The database itself named as the backup: refused, and the database stays in place.
    let (ok, _, err) = run(&restored, &["restore", live.to_str().expect("path")], "");
    assert!(!ok && err.contains("the database itself"), "{err}");
    let (ok, out, err) = run(&restored, &["verify", live.to_str().expect("path")], "");
    assert!(ok && out.contains("9999"), "{out}{err}");
    // Nor a backup left under the name a restore copies in to (it would be cleared first).
    let parked = restored.join("baylink.db.incoming");
    std::fs::copy(&copy, &parked).expect("a backup parked there");
    let (ok, _, err) = run(&restored, &["restore", parked.to_str().expect("path")], "");
    assert!(!ok && err.contains("a restore's copy"), "{err}");
    assert!(parked.exists(), "the backup is kept");
    std::fs::remove_file(&parked).expect("cleared");

    // A database whose server crashed, a commit in its own log: kept whole, by a second name,
    // with no log of it left beside the backup put in its place.
    let crashed = rusqlite::Connection::open(&live).expect("the database");
    crashed
        .pragma_update(None, "wal_autocheckpoint", 0)
        .expect("no checkpoint");
    crashed
        .execute("UPDATE meta SET value = '7777' WHERE key = 'seq'", [])
        .expect("a commit");
    std::mem::forget(crashed);
    assert!(restored.join("baylink.db-wal").exists());
    let (ok, out, err) = run(&restored, &["restore", copy.to_str().expect("path")], "");
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&restored, &["verify", live.to_str().expect("path")], "");
    assert!(ok && out.contains("9999"), "{out}{err}");
    // The kept file alone, copied without any log, holds the commit.
    let kept: Vec<std::path::PathBuf> = std::fs::read_dir(&restored)
        .expect("the data directory")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            let name = p.to_string_lossy();
            name.contains("replaced-") && !name.ends_with("-wal") && !name.ends_with("-shm")
        })
        .collect();
    let alone = dir.path().join("alone.db");
    let held = kept.iter().any(|p| {
        std::fs::copy(p, &alone).expect("a copy of the file alone");
        let (_, out, _) = run(&restored, &["verify", alone.to_str().expect("path")], "");
        out.contains("7777")
    });
    assert!(
        held,
        "the crashed database kept whole in its file: {kept:?}"
    );
    let left: Vec<String> = std::fs::read_dir(&restored)
        .expect("the data directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains("incoming"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A log left where no database is (moved away by hand without it) would be applied to the
    // backup: refused, the log left for the operator.
    let orphan = dir.path().join("orphan");
    std::fs::create_dir_all(&orphan).expect("dir");
    std::fs::write(orphan.join("baylink.db-wal"), b"a log").expect("a log alone");
    let (ok, _, err) = run(&orphan, &["restore", copy.to_str().expect("path")], "");
    assert!(!ok && err.contains("without its database"), "{err}");
    assert!(!orphan.join("baylink.db").exists());
}

#[test]
fn administration_waits_for_a_restore_under_way() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let (ok, _, err) = run(&data, &["migrate"], "");
    assert!(ok, "{err}");
    // A restore under way holds serve.lock alone.
    let restoring = std::fs::File::open(data.join("serve.lock")).expect("serve.lock");
    restoring.lock().expect("held as a restore holds it");
    let mut listing = server(&data)
        .args(["user", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baylink-server runs");
    // It waits: it would otherwise write beside a database about to be swapped.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        listing.try_wait().expect("state").is_none(),
        "the command went on under the restore"
    );
    restoring.unlock().expect("restore done");
    let out = listing.wait_with_output().expect("exits");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_migration_waits_for_every_server_on_the_database_to_stop() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let (ok, _, err) = run(&data, &["migrate"], "");
    assert!(ok, "{err}");
    // A server running (it holds serve.lock shared) on a database a step behind this build.
    let serving = std::fs::File::open(data.join("serve.lock")).expect("serve.lock");
    serving.lock_shared().expect("held as a server holds it");
    let conn = rusqlite::Connection::open(data.join("baylink.db")).expect("the database");
    let known: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("its schema");
    conn.pragma_update(None, "user_version", known - 1)
        .expect("a step behind");
    let (ok, _, err) = run(&data, &["migrate"], "");
    assert!(!ok && err.contains("a server is running"), "{err}");
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("its schema");
    assert_eq!(found, known - 1, "nothing migrated");
    // With nothing to do, it says so while servers run.
    conn.pragma_update(None, "user_version", known)
        .expect("back");
    let (ok, out, err) = run(&data, &["migrate"], "");
    assert!(ok && out.contains("nothing to do"), "{out}{err}");
}

#[test]
fn the_audit_log_exports_as_csv_with_what_the_command_line_did() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (ok, _, err) = run(dir.path(), &["migrate"], "");
    assert!(ok, "{err}");
    let (ok, _, err) = run(dir.path(), &["station", "import"], "");
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        dir.path(),
        &[
            "user",
            "add",
            "wang",
            "--role",
            "reviewer",
            "--station",
            "441303006",
            "--name",
            "王, \"审核\"",
        ],
        "a long password\n",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = run(dir.path(), &["audit", "export"], "");
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("time,account,action,target,detail"));
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter()
            .any(|r| r.contains(",operator,add_account,wang,")),
        "{out}"
    );
    assert!(
        rows.iter().any(|r| r.contains(",operator,import_places,")),
        "{out}"
    );
    let (ok, out, _) = run(
        dir.path(),
        &["audit", "export", "--action", "add_account"],
        "",
    );
    assert!(ok && out.lines().count() == 2, "{out}");
    let (ok, out, _) = run(
        dir.path(),
        &["audit", "export", "--since", "2999-01-01"],
        "",
    );
    assert!(ok && out.lines().count() == 1, "{out}");
    let (ok, _, err) = run(dir.path(), &["audit", "export", "--since", "yesterday"], "");
    assert!(!ok && err.contains("YYYY-MM-DD"), "{err}");
}

#[test]
fn the_systemd_unit_is_one_systemd_takes_without_a_warning() {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        println!("systemd-analyze is not installed: the unit was not checked");
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let unit = include_str!("../../packaging/baylink-server.service").replace(
        "/usr/local/bin/baylink-server",
        env!("CARGO_BIN_EXE_baylink-server"),
    );
    let path = dir.path().join("baylink-server.service");
    std::fs::write(&path, unit).expect("unit written");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("baylink-server.service"))
        .collect();
    assert!(ours.is_empty(), "{said}");
}

/// On PostgreSQL as on SQLite: a command that only reads refuses a database holding no
/// Baylink schema (and leaves it empty), `migrate` says what it did, and `config check` shows the
/// database without its password; no command makes a data directory it does not use.
#[test]
fn administration_on_postgres_reads_only_a_baylink_database_and_migrate_says_what_it_did() {
    let Some(cluster) = baylink_server::store::pg::test_postgres() else {
        return;
    };
    let fresh = baylink_server::store::pg::FreshDatabase::new(&cluster).expect("a database");
    let url = fresh.url.clone();
    let dir = tempfile::tempdir().expect("temporary directory");
    // The data directory a command on PostgreSQL has no use for, and does not make.
    let data = dir.path().join("data");
    let (ok, _, err) = run(&data, &["--database", &url, "key", "list"], "");
    assert!(!ok && err.contains("is --database right?"), "{err}");
    let schema = baylink_server::store::pg::schema_of(&url).expect("schema read");
    assert_eq!(schema.0, None, "nothing was created");
    let (ok, out, err) = run(&data, &["--database", &url, "migrate"], "");
    assert!(ok && out.contains("created the schema"), "{out} {err}");
    let (ok, out, err) = run(&data, &["--database", &url, "migrate"], "");
    assert!(ok && out.contains("nothing to do"), "{out} {err}");
    let (ok, out, err) = run(&data, &["--database", &url, "key", "list"], "");
    assert!(ok && out.contains("signs"), "{out} {err}");
    let secret = format!("{url} password=s3cr3t-word");
    let (ok, out, err) = run(&data, &["--database", &secret, "config", "check"], "");
    assert!(ok && out.contains(":***@"), "{out} {err}");
    assert!(
        !out.contains("s3cr3t") && !err.contains("s3cr3t"),
        "{out} {err}"
    );
    let (ok, _, err) = run(&data, &["--database", &url, "backup", "x.db"], "");
    assert!(!ok && err.contains("pg_dump"), "{err}");
    assert!(!data.exists(), "an empty data directory was made");
}

#[test]
fn serve_says_so_when_it_starts_empty_beside_a_database_a_restore_kept() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("dir");
    std::fs::write(data.join("baylink.db.replaced-1796600000"), b"kept").expect("kept");
    let mut child = server(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let warned = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("kept aside"));
    let _ = child.kill();
    let _ = child.wait();
    let warned = warned.expect("a warning before serving");
    assert!(
        warned.contains("baylink.db.replaced-1796600000"),
        "{warned}"
    );

    // A log left without its database: refused, not overwritten by a new database's.
    let orphan = dir.path().join("orphan");
    std::fs::create_dir_all(&orphan).expect("dir");
    std::fs::write(orphan.join("baylink.db-wal"), b"a log").expect("a log alone");
    let (ok, _, err) = run(&orphan, &["serve", "--listen", "127.0.0.1:0"], "");
    assert!(!ok && err.contains("without baylink.db"), "{err}");
    assert_eq!(
        std::fs::read(orphan.join("baylink.db-wal")).expect("kept"),
        b"a log"
    );
    assert!(!orphan.join("baylink.db").exists());
}
