//! `baylink`: the command-line field client. It drives the same mobile-core library that the
//! phone apps embed, so everything an officer does on a phone can be scripted and tested here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use baylink_domain::{EntityKind, Input, Writer};
use clap::{Arg, ArgAction, ArgMatches, Command};
use mobile_core::{Error, Record, RecordSummary, Store};
use uuid::Uuid;

/// Prints a line to standard output; a reader that went away (`baylink status | head`) ends
/// the program quietly instead of making it panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let written = writeln!(std::io::stdout(), $($arg)*);
        if written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            std::process::exit(0);
        }
    }};
}

/// Exit status for input the officer must correct.
const EXIT_INVALID: u8 = 2;
/// Exit status when the server refused the credentials or the session.
const EXIT_AUTH: u8 = 3;
/// Exit status when the device was revoked (and wiped).
const EXIT_REVOKED: u8 = 4;
/// Exit status of a sync that finished but left changes the server refused (see `status`).
const EXIT_REFUSED: u8 = 5;

fn kind_arg() -> Arg {
    let kinds: Vec<&'static str> = EntityKind::ALL.iter().map(|k| k.as_str()).collect();
    Arg::new("kind")
        .required(true)
        .value_parser(kinds)
        .help("house, person, residence, vehicle, visit or dispute")
}

/// `--id-number` for `id_number`: one option per field an officer may type, from the data model.
fn capture_command(kind: EntityKind) -> Command {
    let mut cmd =
        Command::new(kind.as_str()).about(format!("Capture a {kind} ({})", kind.label_zh()));
    for spec in kind.fields().filter(|s| s.writer != Writer::System) {
        // A required field a form may leave empty takes its default (said so, not "required").
        let need = match kind.default_value(spec.name) {
            Some(default) => format!(" (default {default})"),
            None if spec.name == "village" => {
                " (required; default: your village, when you have only one)".to_owned()
            }
            None if spec.required => " (required)".to_owned(),
            None => String::new(),
        };
        let help = format!("{} / {}{need}", spec.zh, spec.en);
        cmd = cmd.arg(
            Arg::new(spec.name)
                .long(spec.name.replace('_', "-"))
                .value_name("TEXT")
                .help(help),
        );
    }
    cmd.arg(
        Arg::new("update")
            .long("update")
            .action(ArgAction::SetTrue)
            .help("已登记过（同一证件号码、号牌或地址编码）时以本次填写更新它 / update the record already registered with this ID number, plate or address code (without it, a capture that would change it is refused)"),
    )
}

fn cli() -> Command {
    Command::new("baylink")
        .about("Baylink field client: capture and find records on this device, offline")
        .version(env!("CARGO_PKG_VERSION"))
        .arg(
            Arg::new("data")
                .long("data")
                .global(true)
                .env("BAYLINK_DATA")
                .default_value("baylink-data")
                .hide_env_values(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("Directory of the device's data"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .global(true)
                .action(ArgAction::SetTrue)
                .help("Print JSON"),
        )
        .subcommand_required(true)
        .subcommand(
            Command::new("capture")
                .about("Capture a record")
                .subcommand_required(true)
                .subcommands(EntityKind::ALL.map(capture_command)),
        )
        .subcommand(
            Command::new("edit")
                .about("Change fields of a record: edit KIND ID FIELD=VALUE…")
                .arg(kind_arg())
                .arg(Arg::new("id").required(true))
                .arg(
                    Arg::new("assignments")
                        .required(true)
                        .num_args(1..)
                        .value_name("FIELD=VALUE"),
                ),
        )
        .subcommand(
            Command::new("delete")
                .about("Delete a record")
                .arg(Arg::new("id").required(true)),
        )
        .subcommand(
            Command::new("list")
                .about("List records of a kind, newest first")
                .arg(kind_arg())
                .arg(Arg::new("village").long("village"))
                .arg(limit_arg())
                .arg(
                    Arg::new("offset")
                        .long("offset")
                        .default_value("0")
                        .value_parser(clap::value_parser!(u32)),
                ),
        )
        .subcommand(
            Command::new("search")
                .about("Find records by ID number, name, plate, address or phone (prefix)")
                .arg(Arg::new("text").required(true))
                .arg(limit_arg()),
        )
        .subcommand(
            Command::new("show")
                .about("Show one record with its links")
                .arg(Arg::new("id").required(true)),
        )
        .subcommand(
            Command::new("dismiss")
                .about(
                    "Dismiss a record's refused changes: a record the server never took leaves \
                     this phone (one no longer in your villages has left it already), otherwise \
                     the refused fields go back to the server's values",
                )
                .arg(Arg::new("id").required(true)),
        )
        .subcommand(
            Command::new("login")
                .about("Sign in to a server (password from standard input)")
                .arg(
                    Arg::new("server")
                        .long("server")
                        .required(true)
                        .help("Server URL, like http://127.0.0.1:8080"),
                )
                .arg(Arg::new("user").long("user").required(true))
                .arg(
                    Arg::new("device-name")
                        .long("device-name")
                        .default_value("baylink CLI"),
                )
                .arg(Arg::new("ca").long("ca").value_name("PEM").help(
                    "A CA certificate (PEM file) trusted for this server instead of the bundled roots: a server on the police intranet signed by its own CA; kept for later syncs",
                )),
        )
        .subcommand(Command::new("logout").about("End the session (local data stays)"))
        .subcommand(Command::new("sync").about("Push pending changes, pull the villages' records"))
        .subcommand(
            Command::new("status")
                .about("Session, changes waiting to sync, refused changes, returned records"),
        )
        .subcommand(
            Command::new("fields")
                .about("The fields of a kind")
                .arg(kind_arg()),
        )
}

fn limit_arg() -> Arg {
    Arg::new("limit")
        .long("limit")
        .default_value("50")
        .value_parser(clap::value_parser!(u32))
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let result = run(&matches);
    if let (Err(e), true) = (&result, matches.get_flag("json")) {
        // Scripts reading `--json` get the error as JSON too (the text still goes to stderr).
        out!("{}", json_error(e));
    }
    match result {
        Ok(status) => ExitCode::from(status),
        // A sign-in refused while another officer's changes wait is a refused sign-in.
        Err(Error::Invalid(e)) if e.field_errors().iter().any(|f| f.code == "changes_waiting") => {
            for problem in e.field_errors() {
                eprintln!("{} / {}", problem.message_zh, problem.message_en);
            }
            ExitCode::from(EXIT_AUTH)
        }
        Err(Error::Invalid(e)) if !e.field_errors().is_empty() => {
            for problem in e.field_errors() {
                eprintln!(
                    "[{}] {} / {}",
                    problem.field, problem.message_zh, problem.message_en
                );
            }
            eprintln!("未保存 / nothing was saved");
            ExitCode::from(EXIT_INVALID)
        }
        Err(e @ (Error::Invalid(_) | Error::BadId(_))) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_INVALID)
        }
        // Ctrl-C at the password prompt (read with the terminal's signals off): as a shell
        // tells an interrupted command.
        Err(Error::Cancelled) => {
            eprintln!("已取消 / cancelled");
            ExitCode::from(130)
        }
        Err(Error::Revoked) => {
            eprintln!("error: {}", Error::Revoked);
            ExitCode::from(EXIT_REVOKED)
        }
        Err(e) if e.is_auth() => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_AUTH)
        }
        Err(e @ Error::Network(_)) => {
            eprintln!("error: {e}");
            // Said of a sync: a sign-in that found no server has nothing waiting to tell of.
            if matches.subcommand_name() == Some("sync") {
                eprintln!(
                    "未同步的记录仍保存在本机，下次同步时上传 / nothing is lost: what did not sync stays on this device and goes with the next sync"
                );
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open(matches: &ArgMatches) -> Result<Store, Error> {
    let dir = matches
        .get_one::<PathBuf>("data")
        .cloned()
        .unwrap_or_else(|| PathBuf::from("baylink-data"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
    // With BAYLINK_PASSPHRASE set, the store is encrypted at rest under it (as an app would).
    match std::env::var("BAYLINK_PASSPHRASE") {
        Ok(passphrase) if !passphrase.is_empty() => {
            Store::open_encrypted(dir.join("field.db"), &passphrase)
        }
        _ => Store::open(dir.join("field.db")),
    }
}

fn kind(matches: &ArgMatches) -> EntityKind {
    matches
        .get_one::<String>("kind")
        .and_then(|k| EntityKind::parse(k))
        .unwrap_or(EntityKind::Person)
}

fn id(matches: &ArgMatches) -> Result<Uuid, Error> {
    let text = matches
        .get_one::<String>("id")
        .map(String::as_str)
        .unwrap_or_default();
    Uuid::parse_str(text.trim()).map_err(|_| Error::BadId(text.to_owned()))
}

/// Runs a command; returns the exit status of a command that finished (0 unless a sync left
/// refused changes).
fn run(matches: &ArgMatches) -> Result<u8, Error> {
    let json = matches.get_flag("json");
    let (command, sub) = matches.subcommand().unwrap_or(("status", matches));
    let mut store = open(matches)?;
    match command {
        "capture" => {
            let Some((kind_name, args)) = sub.subcommand() else {
                return Ok(0);
            };
            let kind = EntityKind::parse(kind_name).unwrap_or(EntityKind::Person);
            let mut input: Input = kind
                .fields()
                .filter(|s| s.writer != Writer::System)
                .filter_map(|s| {
                    args.get_one::<String>(s.name)
                        .map(|v| (s.name.to_owned(), v.clone()))
                })
                .collect();
            // An officer of one village need not type its twelve digits each time.
            if !input.contains_key("village")
                && let Some(session) = store.session()?
                && let [only] = session.villages.as_slice()
            {
                input.insert("village".to_owned(), only.clone());
            }
            // A slip in re-registering someone known would overwrite good values: a known
            // record changes only when asked to.
            let captured = if args.get_flag("update") {
                store.capture_detailed(kind, &input)?
            } else {
                store.capture_new(kind, &input)?
            };
            let id = captured.id;
            if json {
                out!(
                    "{}",
                    serde_json::json!({ "id": id.to_string(), "kind": kind.as_str(),
                                        "existed": captured.existed, "changed": captured.changed })
                );
            } else {
                out!("{id}");
                if captured.existed {
                    let what = if captured.changed.is_empty() {
                        "无变化 / nothing changed".to_owned()
                    } else {
                        format!("已更新 / updated: {}", captured.changed.join(", "))
                    };
                    let (zh, en) = match kind {
                        EntityKind::Person => ("同一证件类型及号码", "same ID type and number"),
                        EntityKind::Vehicle => ("同一号牌及号牌种类", "same plate and plate kind"),
                        EntityKind::House => ("同一地址编码", "same address code"),
                        _ => (
                            "同一人员、房屋及入住日期",
                            "same person, house and move-in date",
                        ),
                    };
                    eprintln!(
                        "此{}已登记过（{zh}），本次为更新 / this {} was registered before ({en}): {what}",
                        kind.label_zh(),
                        kind.as_str()
                    );
                }
            }
        }
        "edit" => {
            let mut input = BTreeMap::new();
            for assignment in sub.get_many::<String>("assignments").into_iter().flatten() {
                let Some((field, value)) = assignment.split_once('=') else {
                    return Err(Error::Invalid(baylink_domain::Error::Invalid(vec![
                        baylink_domain::FieldError {
                            field: assignment.clone(),
                            code: "syntax".into(),
                            message_zh: format!("“{assignment}”应写成 字段=值"),
                            message_en: format!("`{assignment}` must read FIELD=VALUE"),
                        },
                    ])));
                };
                // A field by its name or by its Chinese label, as the form shows it.
                let field = field.trim();
                let field = kind(sub)
                    .fields()
                    .find(|s| s.zh == field)
                    .map_or_else(|| field.replace('-', "_"), |s| s.name.to_owned());
                input.insert(field, value.to_owned());
            }
            let id = id(sub)?;
            let record = store
                .get(id)?
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            if record.summary.kind != kind(sub).as_str() {
                return Err(Error::NotFound(format!(
                    "{id} (it is a {})",
                    record.summary.kind
                )));
            }
            let changed = store.edit(id, &input)?;
            if json {
                out!(
                    "{}",
                    serde_json::json!({ "id": id.to_string(), "changed": changed })
                );
            } else {
                out!("已改动 {changed} 个字段 / {changed} field(s) changed");
            }
        }
        "delete" => {
            let id = id(sub)?;
            let withdrawn = store.delete(id)? == mobile_core::Deletion::Withdrawn;
            if json {
                out!(
                    "{}",
                    serde_json::json!({ "id": id.to_string(), "deleted": true, "withdrawn": withdrawn })
                );
            } else if withdrawn {
                out!(
                    "已撤回 {id}：此记录从未同步，不会上传 / withdrawn {id}: it never synced, so nothing of it reaches the server"
                );
            } else {
                out!(
                    "已删除 {id}（同步时告知服务器） / deleted {id} (the server is told at the next sync)"
                );
            }
        }
        "list" => {
            let limit = *sub.get_one::<u32>("limit").unwrap_or(&50);
            let offset = *sub.get_one::<u32>("offset").unwrap_or(&0);
            let village = sub.get_one::<String>("village").map(String::as_str);
            let rows = store.list(kind(sub), village, limit, offset)?;
            print_summaries(&rows, json);
            if !json && rows.len() as u64 == u64::from(limit) && limit > 0 {
                let next = u64::from(offset) + u64::from(limit);
                eprintln!(
                    "只显示了 {limit} 条，下一页：--offset {next} / showing {limit}: more with --offset {next}"
                );
            }
        }
        "search" => {
            let limit = *sub.get_one::<u32>("limit").unwrap_or(&50);
            let text = sub
                .get_one::<String>("text")
                .map(String::as_str)
                .unwrap_or_default();
            let rows = store.search(text, limit)?;
            print_summaries(&rows, json);
            if !json && rows.is_empty() {
                eprintln!(
                    "未找到（按姓名、证件号码、电话、号牌或地址的开头查找）/ nothing found (searched by the start of a name, ID number, phone, plate or address)"
                );
            }
            if !json && rows.len() as u64 == u64::from(limit) && limit > 0 {
                eprintln!(
                    "只显示了前 {limit} 条，请输入更多字符或加大 --limit / showing the first {limit}: type more of it, or raise --limit"
                );
            }
        }
        "dismiss" => {
            let id = id(sub)?;
            let dismissal = store.dismiss_refused(id)?;
            if json {
                out!("{}", serde_json::to_string(&dismissal).unwrap_or_default());
            } else {
                match dismissal {
                    mobile_core::Dismissal::Removed => out!(
                        "已从本机删除（服务器从未接收此记录，或它已不在您的辖区） / removed from this phone: the server never took it, or it is no longer in your villages"
                    ),
                    mobile_core::Dismissal::Reverted { fields } => out!(
                        "已恢复 {fields} 个字段为服务器上的值 / {fields} field(s) back to the server's values"
                    ),
                }
            }
        }
        "show" => {
            let id = id(sub)?;
            let record = store
                .get(id)?
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            print_record(&record, json);
        }
        "login" => {
            let server = sub
                .get_one::<String>("server")
                .map(String::as_str)
                .unwrap_or_default();
            let user = sub
                .get_one::<String>("user")
                .map(String::as_str)
                .unwrap_or_default();
            let name = sub
                .get_one::<String>("device-name")
                .map(String::as_str)
                .unwrap_or_default();
            if let Some(path) = sub.get_one::<String>("ca") {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| Error::Corrupt(format!("reading the CA file {path}: {e}")))?;
                store.set_server_ca(Some(&pem))?;
            }
            let password = read_password()?;
            mobile_core::sync::login(&mut store, server, user, &password, name)?;
            let villages = store
                .session()?
                .map(|s| s.villages.join(","))
                .unwrap_or_default();
            if json {
                let device = store.node_id().to_string();
                out!(
                    "{}",
                    serde_json::json!({ "user": user, "villages": villages, "device": device })
                );
            } else {
                out!(
                    "已登录 / signed in as {user} (villages {villages}) on device {}",
                    store.node_id()
                );
            }
        }
        "logout" => {
            let waiting = store.pending_records()? + store.refused_records()?.len() as u64;
            mobile_core::sync::logout(&mut store)?;
            out!("已退出 / signed out");
            if waiting > 0 {
                eprintln!(
                    "注意：本机还有 {waiting} 条记录未同步，本警员下次登录同步时上传；换人使用前须先同步 / note: {waiting} record(s) have not synced: they go with this officer's next sync, and another officer cannot sign in here until they have"
                );
            }
        }
        "sync" => {
            let show = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = mobile_core::sync::sync(&mut store, &Shown { bar: show })?;
            if show {
                eprintln!();
            }
            if json {
                out!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                out!(
                    "同步完成：上传 {} 条记录，被拒 {} 条，下载 {} 个值，移除 {} 条记录 / pushed {} record(s) ({} values), refused {} record(s) ({} values), pulled {} values, removed {} record(s)",
                    report.pushed_records,
                    report.refused_records,
                    report.pulled,
                    report.purged,
                    report.pushed_records,
                    report.pushed,
                    report.refused_records,
                    report.refused,
                    report.pulled,
                    report.purged
                );
                // Only when it happened: the phone's clock ran ahead of the server's.
                if report.restamped > 0 {
                    out!(
                        "  本机时钟快于服务器：{} 个值已按服务器时间重新标记并上传 / restamped {} value(s): this phone's clock ran ahead of the server's",
                        report.restamped,
                        report.restamped
                    );
                }
                if report.started_over {
                    out!(
                        "  重新下载了辖区数据（本机太久未同步），未上传的修改仍保留 / started over: this phone was unseen for longer than the server keeps \
                         its place, so its villages were pulled again (unsent changes kept)"
                    );
                }
                if report.resent > 0 {
                    out!(
                        "  重新上传了服务器已丢失的 {} 个值（服务器从备份恢复过） / sent again: {} value(s) of this phone's own the server no longer had \
                         (its database was put back from a backup)",
                        report.resent,
                        report.resent
                    );
                }
                for news in &report.news {
                    let what = match news.what.as_str() {
                        "approved" => "派出所已审核通过 / approved by the station".to_owned(),
                        "returned" => format!(
                            "派出所退回，请改正 / returned by the station: {}",
                            news.comment.as_deref().unwrap_or("")
                        ),
                        "merged_away" => format!(
                            "已合并到另一条记录 / merged into {}",
                            news.merged_into.as_deref().unwrap_or("")
                        ),
                        "watched" => format!(
                            "在重点关注名单上 / on the station's watch list ({})",
                            news.rule.as_deref().unwrap_or("")
                        ),
                        _ => format!(
                            "{} 已被他人改动 / replaced elsewhere: {} → {}",
                            news.field.as_deref().unwrap_or(""),
                            news.mine.as_deref().unwrap_or(""),
                            news.theirs.as_deref().unwrap_or("")
                        ),
                    };
                    out!("  {} {} {}: {what}", news.kind, news.record_id, news.label);
                }
                if !report.news_complete {
                    out!("  （还有更多消息未显示 / more news than shown）");
                }
            }
            // Refused now or by an earlier sync: records wait for the officer either way.
            let waiting = store.refused_records()?.len();
            if waiting > 0 {
                if !json {
                    out!(
                        "{waiting} 条记录被拒，详见 baylink status / {waiting} record(s) refused: see `baylink status`, correct with `baylink edit` or give up with `baylink dismiss ID`"
                    );
                }
                return Ok(EXIT_REFUSED);
            }
        }
        "status" => print_status(&store, json)?,
        "fields" => {
            let kind = kind(sub);
            let specs = mobile_core::field_specs(kind.as_str().to_owned()).unwrap_or_default();
            for s in specs {
                let choices: Vec<String> = s
                    .choices
                    .iter()
                    .map(|c| format!("{}={}", c.code, c.label_zh))
                    .collect();
                let flag = if s.derived {
                    "derived"
                } else if !s.editable {
                    "system"
                } else if s.required {
                    "required"
                } else {
                    ""
                };
                let input = match &s.target_kind {
                    Some(target) => format!("{}→{target}", s.input),
                    None => s.input.clone(),
                };
                let more = if choices.is_empty() {
                    s.hint_zh.clone()
                } else {
                    choices.join(" ")
                };
                out!(
                    "{:<20} {:<10} {:<8} {:<18} {}",
                    s.name,
                    s.label_zh,
                    flag,
                    input,
                    more
                );
            }
        }
        _ => {}
    }
    Ok(0)
}

/// A sync's progress on stderr: a bar on a terminal, and every retry on any stderr (a sync on a
/// bad link can wait minutes between lines otherwise).
struct Shown {
    bar: bool,
}

impl mobile_core::sync::Progress for Shown {
    fn progress(&self, phase: &str, done: u64, total: u64) {
        if self.bar {
            let filled = if total == 0 {
                0
            } else {
                (done * 30 / total.max(1)).min(30) as usize
            };
            let (full, empty) = ("#".repeat(filled), " ".repeat(30 - filled));
            eprint!("\r{phase:<5} [{full}{empty}] {done}/{total}   ");
        }
    }

    fn retrying(&self, attempt: u32, of: u32, why: &Error, wait: std::time::Duration) {
        if self.bar {
            eprintln!();
        }
        let secs = wait.as_secs_f64().ceil() as u64;
        eprintln!(
            "未成功（{why}），{secs}秒后第{attempt}次尝试（共{of}次），记录都在本机 / failed ({why}): attempt {attempt} of {of} in {secs} s; every record stays on this device"
        );
    }
}

fn print_status(store: &Store, json: bool) -> Result<(), Error> {
    let pending = store.pending_count()?;
    let pending_records = store.pending_records()?;
    let refused = store.refused_records()?;
    let returned = store.returned()?;
    let session = store.session()?;
    if json {
        let value = serde_json::json!({
            "node": store.node_id().to_string(),
            "user": store.user(),
            "session": session,
            "pending_changes": pending,
            "pending_records": pending_records,
            "refused": refused,
            "returned": returned,
        });
        out!("{value}");
        return Ok(());
    }
    out!("设备 device         {}", store.node_id());
    out!("警员 officer        {}", store.user());
    match &session {
        Some(s) => {
            let state = if s.signed_in {
                "已登录 signed in"
            } else {
                "已退出 signed out"
            };
            let last = s.last_sync_ms.map_or("从未 never".to_owned(), |ms| {
                baylink_domain::date::datetime_from_unix_ms(
                    ms as i64,
                    baylink_domain::date::CHINA_OFFSET_MINUTES,
                )
            });
            out!(
                "服务器 server       {} ({state}, 辖区 villages {})",
                s.server,
                s.villages.join(",")
            );
            out!("上次同步 last sync  {last}");
        }
        None => out!("服务器 server       未登录 none (baylink login --server URL --user NAME)"),
    }
    out!("待上传 to sync      {pending_records} 条 record(s) ({pending} values)");
    out!("被拒 refused        {} 条 record(s)", refused.len());
    for r in &refused {
        let kind = EntityKind::parse(&r.kind).map_or(r.kind.as_str(), |k| k.label_zh());
        let note = if r.never_taken {
            "  服务器未接收此记录 / the server has not taken this record"
        } else {
            ""
        };
        out!("  {kind} {} {}{note}", r.id, r.label);
        // One line per reason, naming its fields (a record refused whole has one reason).
        let mut reasons: Vec<(&str, &str, Vec<&str>)> = Vec::new();
        for f in &r.fields {
            match reasons
                .iter_mut()
                .find(|(code, message, _)| *code == f.code && *message == f.message)
            {
                Some((_, _, labels)) => labels.push(&f.label),
                None => reasons.push((&f.code, &f.message, vec![&f.label])),
            }
        }
        for (code, message, labels) in reasons {
            out!("    {}: {message} [{code}]", labels.join("、"));
        }
    }
    if !refused.is_empty() {
        out!(
            "  改正：baylink edit KIND ID 字段=值（整条记录重新上传）；放弃：baylink dismiss ID / correct: baylink edit KIND ID FIELD=VALUE (the whole record goes again); give up: baylink dismiss ID"
        );
    }
    out!("退回 returned       {} 条 record(s)", returned.len());
    for f in returned {
        out!(
            "  {} {} {}: {}",
            f.record.kind,
            f.record.id,
            f.record.label,
            f.comment
        );
    }
    Ok(())
}

/// An error as `{"error": {"code", "message", "fields": [{"field", "code", "message_zh",
/// "message_en"}]}}`.
fn json_error(e: &Error) -> serde_json::Value {
    let code = match e {
        Error::Invalid(_) => "invalid",
        Error::NotFound(_) => "not_found",
        Error::BadId(_) => "bad_id",
        Error::Server { code, .. } => code.as_str(),
        Error::NotSignedIn => "not_signed_in",
        Error::Revoked => "device_revoked",
        Error::WrongPassphrase => "wrong_passphrase",
        Error::Network(_) => "network",
        _ => "error",
    };
    let fields: Vec<serde_json::Value> = match e {
        Error::Invalid(invalid) => invalid
            .field_errors()
            .iter()
            .map(|f| {
                serde_json::json!({"field": f.field, "code": f.code,
                                   "message_zh": f.message_zh, "message_en": f.message_en})
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut error = serde_json::json!({"code": code, "message": e.to_string(), "fields": fields});
    // What failed on the way: `dns`, `connect`, `tls`, `timeout`, `interrupted`, `unavailable`.
    if let Error::Network(n) = e {
        error["network"] = serde_json::Value::from(n.kind.code());
    }
    serde_json::json!({ "error": error })
}

/// The password: the first line of standard input (on a terminal, prompted on stderr and not
/// shown as it is typed).
fn read_password() -> Result<String, Error> {
    use std::io::{BufRead, IsTerminal, Write};
    let terminal = std::io::stdin().is_terminal();
    let typed = if terminal {
        // Echo off before the prompt shows: nothing typed at it is ever shown.
        let unechoed = Unechoed::begin();
        eprint!("密码 / password: ");
        let _ = std::io::stderr().flush();
        let typed = unechoed.read_line();
        // The Enter typed was not echoed either.
        eprintln!();
        typed?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::Corrupt(format!("reading the password: {e}")))?;
        line
    };
    let password = typed.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(Error::Invalid(baylink_domain::Error::Invalid(vec![
            baylink_domain::FieldError {
                field: "password".into(),
                code: "required".into(),
                message_zh: "密码为空：请在提示后输入密码，或从标准输入传入".into(),
                message_en:
                    "no password given: type it at the prompt, or pass it on standard input".into(),
            },
        ])));
    }
    Ok(password)
}

/// The most bytes of a password typed at the prompt (a paste of pages is cut there).
#[cfg(unix)]
const PASSWORD_BYTES: usize = 1024;

/// Reads past an escape sequence (`ESC [ … final` or `ESC O final`) an arrow or function key
/// sent.
#[cfg(unix)]
fn skip_escape(stdin: &mut impl std::io::Read) {
    let mut key = [0u8; 1];
    if !matches!(stdin.read(&mut key), Ok(1)) || !matches!(key[0], b'[' | b'O') {
        return;
    }
    while matches!(stdin.read(&mut key), Ok(1)) {
        if (0x40..=0x7e).contains(&key[0]) {
            return;
        }
    }
}

/// The terminal with its echo off while a password is typed, back as it was when dropped. On
/// Unix the keys are read one by one with the terminal's own signals off, so that Ctrl-C ends the
/// prompt here, echo restored, rather than the process with the terminal left silent.
struct Unechoed {
    #[cfg(unix)]
    before: Option<rustix::termios::Termios>,
}

impl Unechoed {
    #[cfg(unix)]
    fn begin() -> Unechoed {
        use rustix::termios::{
            LocalModes, OptionalActions, SpecialCodeIndex, tcgetattr, tcsetattr,
        };
        let stdin = std::io::stdin();
        let before = tcgetattr(&stdin).ok().filter(|before| {
            let mut quiet = before.clone();
            quiet
                .local_modes
                .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG);
            quiet.special_codes[SpecialCodeIndex::VMIN] = 1;
            quiet.special_codes[SpecialCodeIndex::VTIME] = 0;
            // Put back first by a signal that ends the process meanwhile.
            let _ = ending::MODES.set(before.clone());
            ending::catch();
            let quieted = tcsetattr(&stdin, OptionalActions::Now, &quiet).is_ok();
            if !quieted {
                ending::release();
            }
            quieted
        });
        Unechoed { before }
    }

    #[cfg(not(unix))]
    fn begin() -> Unechoed {
        Unechoed {}
    }

    /// A line typed with the echo off: Enter or Ctrl-D ends it, Backspace and Ctrl-U correct
    /// it, arrow keys are passed over, Ctrl-C gives up.
    #[cfg(unix)]
    fn read_line(self) -> Result<String, Error> {
        use std::io::Read;
        if self.before.is_none() {
            // The terminal kept its modes: read a line as it gives one.
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)
                .map_err(|e| Error::Corrupt(format!("reading the password: {e}")))?;
            return Ok(line);
        }
        let mut typed: Vec<u8> = Vec::new();
        let mut stdin = std::io::stdin().lock();
        let mut key = [0u8; 1];
        loop {
            let read = stdin
                .read(&mut key)
                .map_err(|e| Error::Corrupt(format!("reading the password: {e}")))?;
            match (read, key[0]) {
                // Enter, or Ctrl-D as a terminal's end of input.
                (0, _) | (_, b'\r' | b'\n' | 0x04) => break,
                // Ctrl-C, or Ctrl-\ (quit).
                (_, 0x03 | 0x1c) => return Err(Error::Cancelled),
                // An arrow or function key's sequence is no part of a password.
                (_, 0x1b) => skip_escape(&mut stdin),
                (_, 0x15) => typed.clear(),
                (_, 0x7f | 0x08) => {
                    // One character back, however many bytes it took.
                    while let Some(byte) = typed.pop() {
                        if byte & 0xC0 != 0x80 {
                            break;
                        }
                    }
                }
                // Other control keys (Ctrl-Z, Ctrl-S, …) are no part of a password.
                (_, byte) if byte < 0x20 => {}
                (_, byte) if typed.len() < PASSWORD_BYTES => typed.push(byte),
                _ => {}
            }
        }
        String::from_utf8(typed).map_err(|_| {
            Error::Invalid(baylink_domain::Error::Invalid(vec![
                baylink_domain::FieldError {
                    field: "password".into(),
                    code: "encoding".into(),
                    message_zh: "密码含无法识别的字符（请检查输入法）".into(),
                    message_en: "the password holds bytes that are not text (check the input method)".into(),
                },
            ]))
        })
    }

    #[cfg(not(unix))]
    fn read_line(self) -> Result<String, Error> {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)
            .map_err(|e| Error::Corrupt(format!("reading the password: {e}")))?;
        Ok(line)
    }
}

impl Drop for Unechoed {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(before) = self.before.take() {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                &before,
            );
            ending::release();
        }
    }
}

/// A signal that ends the process while the password is typed (a closed window, a `kill`) ends
/// it as it would have, but with the terminal's modes put back first: left off, the shell it
/// returns to would show nothing typed.
#[cfg(unix)]
#[allow(unsafe_code)]
mod ending {
    use std::os::fd::BorrowedFd;
    use std::sync::OnceLock;

    /// The terminal's modes before the prompt.
    pub(super) static MODES: OnceLock<rustix::termios::Termios> = OnceLock::new();

    /// The signals caught while the prompt is shown (SIGINT and SIGQUIT sent by another
    /// process: the keys that would send them are read as keys).
    const SIGNALS: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT];

    extern "C" fn put_back_and_end(signal: libc::c_int) {
        if let Some(modes) = MODES.get() {
            // SAFETY: standard input stays open for the process's life; tcsetattr is
            // async-signal-safe (an ioctl), and MODES is only read here, set before the handler.
            let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
            let _ = rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, modes);
        }
        // SAFETY: signal and raise are async-signal-safe; the signal's default action ends
        // the process as it would have without the prompt.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }

    fn handler() -> libc::sighandler_t {
        put_back_and_end as extern "C" fn(libc::c_int) as libc::sighandler_t
    }

    /// What `signal` does now, read without changing it.
    fn disposition(signal: libc::c_int) -> libc::sighandler_t {
        // SAFETY: a zeroed sigaction is a valid value to be written over; with no new action,
        // sigaction only reads the current one.
        unsafe {
            let mut now: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signal, std::ptr::null(), &mut now);
            now.sa_sigaction
        }
    }

    /// Catches [`SIGNALS`] until [`release`], but those the process was told to ignore
    /// (`nohup`), which are left as they are.
    pub(super) fn catch() {
        for signal in SIGNALS {
            if disposition(signal) != libc::SIG_IGN {
                // SAFETY: the handler does only async-signal-safe work (above).
                unsafe { libc::signal(signal, handler()) };
            }
        }
    }

    /// Gives [`SIGNALS`] caught by [`catch`] their default action again.
    pub(super) fn release() {
        for signal in SIGNALS {
            if disposition(signal) == handler() {
                // SAFETY: restoring the default action.
                unsafe { libc::signal(signal, libc::SIG_DFL) };
            }
        }
    }
}

fn print_summaries(rows: &[RecordSummary], json: bool) {
    if json {
        out!("{}", serde_json::to_string(rows).unwrap_or_default());
        return;
    }
    for r in rows {
        // As the console says it (待审核, 已通过, 已退回); `--json` keeps the codes.
        let status = r.review_status.as_deref().map_or("-", |code| {
            EntityKind::Person
                .field("review_status")
                .and_then(|spec| spec.choice_label(code))
                .unwrap_or(code)
        });
        out!(
            "{}  {:<9} {:<12} {:<8} {}",
            r.id,
            r.kind,
            r.village.as_deref().unwrap_or("-"),
            status,
            r.label
        );
    }
}

fn print_record(record: &Record, json: bool) {
    if json {
        out!("{}", serde_json::to_string(record).unwrap_or_default());
        return;
    }
    let s = &record.summary;
    out!(
        "{} {} {}",
        s.kind,
        s.id,
        if s.deleted { "(deleted)" } else { "" }
    );
    let kind = EntityKind::parse(&s.kind);
    // In the form's order (the kind's fields as the schema lists them), any other after.
    let place = |name: &str| {
        kind.and_then(|k| k.fields().position(|f| f.name == name))
            .unwrap_or(usize::MAX)
    };
    let mut fields: Vec<_> = record
        .fields
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    fields.sort_by(|a, b| (place(a.0.as_str()), a.0).cmp(&(place(b.0.as_str()), b.0)));
    for (name, value) in fields {
        let spec = kind.and_then(|k| k.field(name));
        let label = spec.map_or(name.as_str(), |f| f.zh);
        match spec.and_then(|s| s.choice_label(value)) {
            Some(choice) => out!("  {label:<12} {choice} ({value})"),
            None => out!("  {label:<12} {value}"),
        }
    }
    for link in &record.links {
        let arrow = if link.incoming { "<-" } else { "->" };
        out!(
            "  {arrow} {} {} {} {}",
            link.field,
            link.record.kind,
            link.record.id,
            link.record.label
        );
    }
}
