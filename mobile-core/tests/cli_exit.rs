//! The `baylink` field client's exit statuses against a real server on loopback: a sync that
//! leaves refused changes and a sign-in refused while another officer's changes wait are told
//! apart from success, as the README says.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::audit::Actor;
use baylink_server::{AppState, Config};

const PASSWORD: &str = "correct-horse-battery";
const VILLAGE: &str = "441303006001";

fn baylink(data: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baylink"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("BAYLINK_DATA")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baylink runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("baylink ends")
}

/// Signs `user` in on the phone, the password (and Enter) as `typed`.
fn sign_in(phone: &std::path::Path, url: &str, user: &str, typed: &str) -> Output {
    baylink(phone, &["login", "--server", url, "--user", user], typed)
}

/// Captures 王芳 in the village on the phone, which must take her.
fn capture_wang_fang(phone: &std::path::Path) {
    let captured = baylink(
        phone,
        &[
            "capture",
            "person",
            "--id-number",
            "11010519491231002X",
            "--name",
            "王芳",
            "--village",
            VILLAGE,
        ],
        "",
    );
    assert!(captured.status.success(), "{captured:?}");
}

/// A server on loopback with officers o1 and o2 of one village: its database, its runtime, its
/// address, and what stops it (sent or dropped).
struct Server {
    db: baylink_server::store::Db,
    runtime: tokio::runtime::Runtime,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
}

fn server(dir: &std::path::Path) -> Server {
    let (state, db) = AppState::open(Config::new(dir.join("server"))).expect("server state");
    let hash = baylink_server::auth::password::hash(PASSWORD).expect("hash");
    db.call_blocking(|c| {
        baylink_server::demo::seed_places(c)?;
        for (name, role) in [
            ("o1", Role::Officer),
            ("o2", Role::Officer),
            ("r1", Role::Reviewer),
        ] {
            let new = NewAccount {
                username: name.to_owned(),
                display_name: name.to_owned(),
                role,
                station: Some("441303006".to_owned()),
                password_hash: hash.clone(),
                villages: vec![VILLAGE.to_owned()],
            };
            accounts::create_account(c, Actor::Operator, &new, 0)?;
        }
        Ok(())
    })
    .expect("officers");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(baylink_server::serve_until(listener, state, async move {
        let _ = stopped.await;
    }));
    Server {
        db,
        runtime,
        url,
        stop,
    }
}

#[test]
fn a_sync_leaving_refusals_exits_5_and_a_sign_in_refused_for_waiting_changes_exits_3() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = server(dir.path());
    let (db, url) = (&server.db, &server.url);
    let phone = dir.path().join("phone");
    let password = format!("{PASSWORD}\n");
    let login = |user: &str| sign_in(&phone, url, user, &password);

    assert!(login("o1").status.success());
    capture_wang_fang(&phone);
    // The village is taken from the officer before the phone syncs: its capture is refused.
    db.call_blocking(|c| {
        accounts::assign_villages(c, Actor::Operator, "o1", &["441303006002".to_owned()], 0)
    })
    .expect("villages reassigned");
    let sync = baylink(&phone, &["sync"], "");
    let out = String::from_utf8_lossy(&sync.stdout);
    assert_eq!(sync.status.code(), Some(5), "{out}");
    assert!(out.contains("refused 1 record(s)"), "{out}");

    // The phone knows its officer's villages as the server now holds them: a capture in the
    // new village is taken, one in the old refused on the phone.
    let status: serde_json::Value =
        serde_json::from_slice(&baylink(&phone, &["--json", "status"], "").stdout)
            .expect("status as JSON");
    assert_eq!(
        status["session"]["villages"],
        serde_json::json!(["441303006002"])
    );
    let capture = |village: &str| {
        baylink(
            &phone,
            &[
                "capture",
                "person",
                "--id-number",
                "440102198001011235",
                "--name",
                "李明",
                "--village",
                village,
            ],
            "",
        )
    };
    assert_eq!(capture(VILLAGE).status.code(), Some(2));
    // A second sync while the refused record still waits says so again.
    assert_eq!(baylink(&phone, &["sync"], "").status.code(), Some(5));

    // Another officer cannot sign in here while the refused record waits: a refused sign-in.
    let other = login("o2");
    let err = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(3), "{err}");
    assert!(err.contains("o1"), "{err}");

    // Dismissed, the record leaves the phone, and a sync with nothing refused exits 0.
    let list =
        String::from_utf8_lossy(&baylink(&phone, &["--json", "status"], "").stdout).into_owned();
    let status: serde_json::Value = serde_json::from_str(&list).expect("status as JSON");
    let id = status["refused"][0]["id"]
        .as_str()
        .expect("the refused record's id")
        .to_owned();
    assert!(baylink(&phone, &["dismiss", &id], "").status.success());
    assert_eq!(baylink(&phone, &["sync"], "").status.code(), Some(0));
}

#[test]
fn a_sync_with_the_server_gone_says_each_retry_and_that_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Server {
        runtime, url, stop, ..
    } = server(dir.path());
    let phone = dir.path().join("phone");
    let password = format!("{PASSWORD}\n");
    let login = sign_in(&phone, &url, "o1", &password);
    assert!(login.status.success(), "{login:?}");
    capture_wang_fang(&phone);
    let _ = stop.send(());
    let address = url.trim_start_matches("http://").to_owned();
    let refused = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(&address).is_err()
    });
    assert!(refused, "the server stopped listening");

    let sync = baylink(&phone, &["sync"], "");
    let err = String::from_utf8_lossy(&sync.stderr);
    assert_eq!(sync.status.code(), Some(1), "{err}");
    // Each retry is told as it comes (not only at the end), and the end says nothing is lost.
    for attempt in 2..=4 {
        assert!(err.contains(&format!("attempt {attempt} of 4")), "{err}");
    }
    assert!(err.contains("nothing is lost"), "{err}");
    let status: serde_json::Value =
        serde_json::from_slice(&baylink(&phone, &["--json", "status"], "").stdout)
            .expect("status as JSON");
    assert_eq!(status["pending_records"], 1, "{status}");
    drop(runtime);
}

#[test]
fn a_reviewers_sign_in_is_refused_as_one_and_what_an_officer_mistypes_is_said_in_chinese_too() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = server(dir.path());
    let phone = dir.path().join("phone");
    // A reviewer on the field client: a refused sign-in (3), sent to the console.
    let login = sign_in(&phone, &server.url, "r1", &format!("{PASSWORD}\n"));
    let err = String::from_utf8_lossy(&login.stderr);
    assert_eq!(login.status.code(), Some(3), "{err}");
    assert!(err.contains("/console/"), "{err}");
    // No server at the address: said, with nothing about records waiting (there are none to
    // speak of at a sign-in).
    let nowhere = sign_in(&phone, "http://127.0.0.1:9", "o1", &format!("{PASSWORD}\n"));
    let err = String::from_utf8_lossy(&nowhere.stderr);
    assert_eq!(nowhere.status.code(), Some(1), "{err}");
    assert!(!err.contains("nothing is lost"), "{err}");

    let login = sign_in(&phone, &server.url, "o1", &format!("{PASSWORD}\n"));
    assert!(login.status.success(), "{login:?}");
    capture_wang_fang(&phone);
    let list = baylink(&phone, &["list", "person"], "");
    let shown = String::from_utf8_lossy(&list.stdout);
    assert!(
        shown.contains("王芳") && shown.contains("待审核"),
        "{shown}"
    );
    assert!(!shown.contains("pending"), "{shown}");
    // An id cut short, and one that names nothing here: each said in both languages.
    let cut = baylink(&phone, &["show", "5f412e2a"], "");
    let err = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(2), "{err}");
    assert!(
        err.contains("不是记录编号") && err.contains("is not a record id"),
        "{err}"
    );
    let unknown = baylink(
        &phone,
        &["show", "5f412e2a-0000-4000-8000-000000000000"],
        "",
    );
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(1), "{err}");
    assert!(
        err.contains("本机没有此记录") && err.contains("no record with id"),
        "{err}"
    );
}

#[test]
fn an_empty_password_is_said_to_be_missing_not_wrong() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = server(dir.path());
    let phone = dir.path().join("phone");
    let login = sign_in(&phone, &server.url, "o1", "\n");
    let err = String::from_utf8_lossy(&login.stderr);
    assert_eq!(login.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[password]") && err.contains("no password given"),
        "{err}"
    );
}

/// The field client on a pseudo-terminal, as an officer types at it: what it printed up to
/// `until`, the terminal's other side to type into, and the terminal itself.
#[cfg(unix)]
struct Typed {
    child: std::process::Child,
    master: std::fs::File,
    terminal: std::fs::File,
}

#[cfg(unix)]
impl Typed {
    fn start(data: &std::path::Path, args: &[&str]) -> Typed {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("its name");
        let terminal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("a path"))
            .expect("the terminal");
        let child = Command::new(env!("CARGO_BIN_EXE_baylink"))
            .arg("--data")
            .arg(data)
            .args(args)
            .env_remove("BAYLINK_DATA")
            .stdin(terminal.try_clone().expect("stdin"))
            .stdout(terminal.try_clone().expect("stdout"))
            .stderr(terminal.try_clone().expect("stderr"))
            .spawn()
            .expect("baylink runs");
        Typed {
            child,
            master: std::fs::File::from(master),
            terminal,
        }
    }

    /// Reads what the client printed until `text` appears.
    fn read_until(&mut self, text: &str) -> String {
        use std::io::Read;
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains(text) {
            let n = self.master.read(&mut buf).expect("the terminal's output");
            assert!(
                n > 0,
                "ended before {text:?}: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// Whether the terminal echoes and reads lines, as a shell expects it.
    fn cooked(&self) -> bool {
        use rustix::termios::{LocalModes, tcgetattr};
        let modes = tcgetattr(&self.terminal).expect("modes").local_modes;
        modes.contains(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG)
    }
}

#[cfg(unix)]
#[test]
fn the_password_prompt_hides_what_is_typed_and_ctrl_c_leaves_the_terminal_as_it_was() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = server(dir.path());
    let phone = dir.path().join("phone");
    let args = ["login", "--server", &server.url, "--user", "o1"];

    // Ctrl-C at the prompt: cancelled, the terminal echoing again.
    let mut typed = Typed::start(&phone, &args);
    typed.read_until("password: ");
    assert!(
        !typed.cooked(),
        "echo and signals off while the password is typed"
    );
    typed.master.write_all(&[0x03]).expect("Ctrl-C");
    let status = typed.child.wait().expect("ends");
    assert_eq!(status.code(), Some(130));
    assert!(typed.cooked(), "the terminal is left as it was");

    // A password typed with a slip corrected by Backspace, an arrow key and Ctrl-Z pressed on the way:
    // signed in, nothing of it shown.
    let mut typed = Typed::start(&phone, &args);
    typed.read_until("password: ");
    typed
        .master
        .write_all(format!("x\u{7f}\u{1b}[D\u{1a}{PASSWORD}\r").as_bytes())
        .expect("typed");
    let shown = typed.read_until("\n");
    assert!(typed.child.wait().expect("ends").success());
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(typed.cooked());

    // The window closed (SIGHUP) or the process told to stop (SIGTERM) at the prompt: it ends
    // by that signal, as it would have, with the terminal put back first.
    for (signal, name) in [
        (libc::SIGTERM, "TERM"),
        (libc::SIGHUP, "HUP"),
        // (SIGQUIT too, not tried here: ended by it the process may leave a core file.)
        (libc::SIGINT, "INT"),
    ] {
        use std::os::unix::process::ExitStatusExt;
        let mut typed = Typed::start(&phone, &args);
        typed.read_until("password: ");
        assert!(!typed.cooked());
        let killed = Command::new("kill")
            .args([format!("-{name}"), typed.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = typed.child.wait().expect("ends");
        assert_eq!(status.signal(), Some(signal), "{status:?}");
        assert!(typed.cooked(), "SIG{name} left the terminal silent");
    }
}

#[test]
fn an_officer_of_one_village_need_not_name_it_at_each_capture() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = server(dir.path());
    let phone = dir.path().join("phone");
    let login = sign_in(&phone, &server.url, "o1", &format!("{PASSWORD}\n"));
    assert!(login.status.success(), "{login:?}");
    let captured = baylink(
        &phone,
        &[
            "--json",
            "capture",
            "house",
            "--address",
            "桥西路8号",
            "--use",
            "rental",
            "--status",
            "in_use",
        ],
        "",
    );
    assert!(captured.status.success(), "{captured:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&captured.stdout).expect("JSON")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let shown: serde_json::Value =
        serde_json::from_slice(&baylink(&phone, &["--json", "show", &id], "").stdout)
            .expect("the record");
    assert_eq!(shown["fields"]["village"], VILLAGE);
}
