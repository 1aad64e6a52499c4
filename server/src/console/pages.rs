//! The console's pages (maud templates): layout, sign-in, dashboard, lists, record.

use std::collections::BTreeMap;

use baylink_domain::EntityKind;
use baylink_domain::schema::REVIEW_STATUSES;
use maud::{DOCTYPE, Markup, html};

use super::ConsoleUser;
use crate::store::records::{Filter, Linked, Row};
use crate::store::records::{RecordPage, RecordView};
use crate::store::review::Conflict;

/// `110105************`: the region only, which the page shows anyway as the origin. The birth
/// date is on the same page, so the sequence digits and the check character must go too: with
/// them the whole number could be read back.
pub(super) fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 10 {
        return "*".repeat(chars.len());
    }
    format!(
        "{}{}",
        chars[..ID_SHOWN].iter().collect::<String>(),
        "*".repeat(chars.len() - ID_SHOWN)
    )
}

/// Characters of a resident ID number a mask shows (its region); a shorter document shows none.
const ID_SHOWN: usize = 6;

/// Leading digits of a phone a mask shows (and its last four).
const PHONE_SHOWN: usize = 3;

/// Whether a search reaches past what masks show of an ID number or a phone: any text read as
/// an ID number (a list's mask shows a resident card's region, and a passport's or a permit's
/// number not at all, so six digits can already read one of those; whether a page of results
/// holds it or not tells the same, page after page), or read as a phone past its first digits (a
/// region beginning with 13, 14 or 15 reads as a mobile's too). Such a search tells hidden
/// characters one guess at a time (a record found or not), so it is audited as a reveal is.
pub(super) fn searches_past_masks(typed: &str) -> bool {
    baylink_domain::search::prefixes(typed)
        .iter()
        .any(|(column, prefix)| match *column {
            "id_number" => true,
            // A phone in China begins with 0 (a landline) or 13–19 (a mobile), one abroad with +.
            "phone" => {
                let b = prefix.as_bytes();
                b.len() > phone_shown(prefix)
                    && (b[0] == b'0' || b[0] == b'+' || (b[0] == b'1' && b[1] >= b'3'))
            }
            _ => false,
        })
}

/// A field's value as a page shows it without the audited reveal: ID numbers and phones masked,
/// other fields as they are (`None`).
pub(super) fn masked(field: &str, text: &str) -> Option<String> {
    if matches!(field, "id_number" | "landlord_id_number") {
        Some(mask_id(text))
    } else if field.ends_with("phone") {
        Some(mask_phone(text))
    } else {
        None
    }
}

/// `138****8000`; `+852****4567` (a number abroad keeps its country code: +852 and +853 are
/// told apart).
pub(super) fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() < 7 {
        return "*".repeat(chars.len());
    }
    format!(
        "{}****{}",
        chars[..phone_shown(phone)].iter().collect::<String>(),
        chars[chars.len() - 4..].iter().collect::<String>()
    )
}

/// Leading characters of a phone a mask shows: three digits; abroad `+` and the code of Hong
/// Kong, Macau or Taiwan, else the `+` alone (a short number abroad would show most of itself).
fn phone_shown(phone: &str) -> usize {
    match phone.strip_prefix('+') {
        Some(rest) if ["852", "853", "886"].iter().any(|c| rest.starts_with(c)) => 4,
        Some(_) => 1,
        None => PHONE_SHOWN,
    }
}

/// A time as Huizhou reads it.
pub(super) fn when(ms: u64) -> String {
    baylink_domain::date::datetime_from_unix_ms(
        ms as i64,
        baylink_domain::date::CHINA_OFFSET_MINUTES,
    )
}

fn status_label(code: &str) -> &'static str {
    REVIEW_STATUSES
        .iter()
        .find(|c| c.code == code)
        .map_or("待审核", |c| c.zh)
}

fn kind_label(kind: &str) -> String {
    EntityKind::parse(kind).map_or_else(|| kind.to_owned(), |k| k.label_zh().to_owned())
}

pub(super) fn layout(title: &str, user: Option<&ConsoleUser>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · 湾区e网通 审核台" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                @if let Some(user) = user {
                    header {
                        a.brand href="/console/" { "湾区e网通 · 审核台" }
                        nav {
                            a href="/console/" { "概览" }
                            a href="/console/records?kind=person" { "人员" }
                            a href="/console/records?kind=house" { "房屋" }
                            a href="/console/records?kind=vehicle" { "车辆" }
                            a href="/console/records?status=pending" { "待审核" }
                            a href="/console/conflicts" { "冲突" }
                            a href="/console/duplicates" { "重复" }
                            a href="/console/alerts" { "预警" }
                            @if user.account.role == crate::store::accounts::Role::Admin {
                                a href="/console/admin/users" { "管理" }
                            }
                        }
                        span { (user.account.display_name) }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(user.csrf);
                            button.secondary type="submit" { "退出" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub(super) fn error(status: u16, message: &str) -> Markup {
    layout(
        "出错了",
        None,
        &html! {
            div.card.login {
                h1 { "出错了（" (status) "）" }
                p { (message) }
                p { a href="/console/" { "返回概览" } }
            }
        },
    )
}

pub(super) fn login(error: Option<&str>, csrf: &str, username: &str, next: &str) -> Markup {
    layout(
        "登录",
        None,
        &html! {
            div.card.login {
                h1 { "审核台登录" }
                @if let Some(error) = error { p.error { (error) } }
                form method="post" action="/console/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    @if !next.is_empty() { input type="hidden" name="next" value=(next); }
                    label { "用户名" input name="username" value=(username) autocomplete="username" required autofocus[username.is_empty()]; }
                    label { "密码" input name="password" type="password" autocomplete="current-password" required autofocus[!username.is_empty()]; }
                    button type="submit" { "登录" }
                }
            }
        },
    )
}

/// What the dashboard shows.
pub(super) struct Dashboard {
    /// The figures.
    pub(super) overview: crate::store::dashboard::Overview,
    /// First day of the chart.
    pub(super) since: baylink_domain::Date,
}

/// Captures per day as bars, drawn on the server (no script, no external resources).
fn chart(days: &[(String, i64)], since: baylink_domain::Date) -> Markup {
    let counts: BTreeMap<&str, i64> = days.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let series: Vec<(String, i64)> = (0..30)
        .map(|i| {
            let day = baylink_domain::Date::from_days(since.to_days() + i).to_string();
            let n = counts.get(day.as_str()).copied().unwrap_or(0);
            (day, n)
        })
        .collect();
    let max = series.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let (width, height, bar) = (900, 160, 30);
    html! {
        svg.chart width=(width) height=(height + 50) viewBox={ "0 0 " (width) " " (height + 50) } role="img" aria-label="每日采集量" {
            @for (i, (day, n)) in series.iter().enumerate() {
                @let h = n * height / max;
                @let x = i * bar;
                rect x=(x + 4) y=(height - h + 20) width=(bar - 8) height=(h) fill="#0b3d91" { title { (day) "：" (n) } }
                @if *n > 0 { text x=(x + bar / 2) y=(height - h + 16) font-size="10" text-anchor="middle" { (n) } }
                @if i % 5 == 0 { text x=(x + 4) y=(height + 38) font-size="11" fill="#52606d" { (&day[5..]) } }
            }
            line x1="0" y1=(height + 20) x2=(width) y2=(height + 20) stroke="#cbd2d9" {}
        }
    }
}

pub(super) fn dashboard(user: &ConsoleUser, data: &Dashboard) -> Markup {
    let (counts, names) = (&data.overview.counts, &data.overview.names);
    let mut by_village: BTreeMap<&str, BTreeMap<(&str, &str), i64>> = BTreeMap::new();
    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    for (village, kind, status, n) in counts {
        *by_village
            .entry(village)
            .or_default()
            .entry((kind, status))
            .or_default() += n;
        *totals.entry(status).or_default() += n;
    }
    let kinds = [
        "person",
        "house",
        "residence",
        "vehicle",
        "visit",
        "dispute",
    ];
    layout(
        "概览",
        Some(user),
        &html! {
            h1 { "概览" }
            div.card {
                "待审核 " strong { (totals.get("pending").copied().unwrap_or(0)) }
                " · 已通过 " strong { (totals.get("approved").copied().unwrap_or(0)) }
                " · 已退回 " strong { (totals.get("returned").copied().unwrap_or(0)) }
                " · " a href="/console/conflicts" { "待处理冲突 " strong { (data.overview.conflicts) } }
                " · " a href="/console/alerts" { "未处理预警 " strong { (data.overview.alerts) } }
            }
            h2 { "近30天每日采集量" }
            div.card { (chart(&data.overview.days, data.since)) }
            h2 { "各村（社区）登记数（待审核 / 全部）" }
            table {
                thead { tr { th { "村（社区）" } @for k in kinds { th.num { (kind_label(k)) } } } }
                tbody {
                    @for village in &user.villages {
                        @let cells = by_village.get(village.as_str());
                        tr {
                            td { a href={ "/console/records?village=" (village) } { (names.get(village).map_or(village.as_str(), String::as_str)) } }
                            @for k in kinds {
                                @let all: i64 = cells.map_or(0, |c| c.iter().filter(|((kind, _), _)| *kind == k).map(|(_, n)| n).sum());
                                @let pending: i64 = cells.and_then(|c| c.get(&(k, "pending"))).copied().unwrap_or(0);
                                td.num { a href={ "/console/records?village=" (village) "&kind=" (k) "&status=pending" } { (pending) } " / " (all) }
                            }
                        }
                    }
                }
            }
            h2 { "民警工作进度" }
            table {
                thead { tr { th { "民警" } th.num { "待审核" } th.num { "已通过" } th.num { "已退回" } } }
                tbody {
                    @for p in &data.overview.progress {
                        tr { td { (p.officer) } td.num { (p.pending) } td.num { (p.approved) } td.num { (p.returned) } }
                    }
                }
            }
            h2 { "设备最近同步" }
            table {
                thead { tr { th { "民警" } th { "设备" } th { "最近同步" } } }
                tbody {
                    @for d in &data.overview.devices {
                        tr {
                            td { (d.officer) }
                            td { (d.device) @if d.revoked { span.status-returned { "（已吊销）" } } }
                            td { (d.last_sync_ms.map(when).unwrap_or_else(|| "从未同步".into())) }
                        }
                    }
                }
            }
        },
    )
}

pub(super) fn records(
    user: &ConsoleUser,
    filter: &Filter,
    rows: &[Row],
    page: u32,
    per_page: usize,
    names: &BTreeMap<String, String>,
) -> Markup {
    let village_name = |code: &str| names.get(code).cloned().unwrap_or_else(|| code.to_owned());
    let more = rows.len() > per_page;
    // The list as filtered: its pages, and what its records' pages lead back and on to.
    let queue = queue_of(filter);
    let link = |p: u32| format!("/console/records?{queue}&page={p}");
    layout(
        "记录",
        Some(user),
        &html! {
            h1 { "记录" }
            form.filters method="get" action="/console/records" {
                label { "类型" select name="kind" {
                    option value="" { "全部" }
                    @for k in EntityKind::ALL { option value=(k.as_str()) selected[filter.kind.as_deref() == Some(k.as_str())] { (k.label_zh()) } }
                } }
                label { "村（社区）" select name="village" {
                    option value="" { "全部" }
                    @for v in &user.villages { option value=(v) selected[filter.village.as_deref() == Some(v.as_str())] { (village_name(v)) } }
                } }
                label { "审核状态" select name="status" {
                    option value="" { "全部" }
                    @for s in REVIEW_STATUSES { option value=(s.code) selected[filter.status.as_deref() == Some(s.code)] { (s.zh) } }
                } }
                label { "采集日期从" input type="date" name="from" value=(filter.from.as_deref().unwrap_or("")); }
            label { "至" input type="date" name="to" value=(filter.to.as_deref().unwrap_or("")); }
            label { "搜索（证件号、姓名、车牌、地址、电话开头）" input name="q" value=(filter.query.as_deref().unwrap_or("")) size="28"; }
                button type="submit" { "查询" }
            }
            table {
                thead { tr { th { "类型" } th { "记录" } th { "证件号码" } th { "电话" } th { "村（社区）" } th { "采集人" } th { "审核" } } }
                tbody {
                    @for row in rows.iter().take(per_page) {
                        @let label = match &row.id_number { Some(id) => row.label.replace(id.as_str(), &mask_id(id)), None => row.label.clone() };
                        tr {
                            td { (kind_label(&row.kind)) }
                            td { a href={ "/console/records/" (row.id) @if !queue.is_empty() { "?queue=" (query_escape(&queue)) } } { (if label.is_empty() { row.id.as_str() } else { label.as_str() }) } }
                            td { (row.id_number.as_deref().map(mask_id).unwrap_or_default()) }
                            td { (row.phone.as_deref().map(mask_phone).unwrap_or_default()) }
                            td { (row.village.as_deref().map(village_name).unwrap_or_default()) }
                            td { (row.created_by.as_deref().unwrap_or("")) }
                            @let status = row.review_status.as_deref().unwrap_or("pending");
                            td class={ "status-" (status) } { (status_label(status)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="7" .muted { "没有符合条件的记录" } } }
                }
            }
            div.pager {
                @let export = |format: &str| link(0).replace("/console/records?", &format!("/console/export?format={format}&"));
                a.export href=(export("xlsx")) { "导出 Excel" }
                a.export href=(export("csv")) { "导出 CSV" }
                span.muted title="导出含完整证件号码和电话，记入审计日志；CSV 直接用 Excel 打开会把18位证件号码改成科学计数法，请用 Excel 格式" { "（导出为完整信息，记入审计；用 Excel 打开请选 Excel 格式）" }
                @if page > 0 { a href=(link(page - 1)) { "上一页" } }
                span.muted { "第 " (page.saturating_add(1)) " 页" }
                @if more { a href=(link(page.saturating_add(1))) { "下一页" } }
            }
        },
    )
}

pub(super) fn conflicts(user: &ConsoleUser, list: &[Conflict]) -> Markup {
    let field_label = |c: &Conflict| {
        EntityKind::parse(&c.kind)
            .and_then(|k| k.field(&c.field))
            .map_or(c.field.clone(), |s| s.zh.to_owned())
    };
    // Masked as in lists: the full values only on the record page's audited reveal.
    let shown = |c: &Conflict, value: &str| {
        let text = json_text(value);
        masked(&c.field, &text).unwrap_or(text)
    };
    layout(
        "冲突",
        Some(user),
        &html! {
            h1 { "并发修改冲突" }
            p.muted { "同一字段在两台设备上离线时被修改（两名民警，或同一民警的两部手机）。系统已按时间先后自动取值；请核实后选择正确的值。证件号码和电话在记录页“显示完整”后核对（记入审计日志）。" }
            table {
                thead { tr { th { "记录" } th { "字段" } th { "现行值" } th { "另一值" } th { "处理" } } }
                tbody {
                    @for c in list {
                        tr {
                            td { a href={ "/console/records/" (c.entity) } { (if c.label.is_empty() { c.entity.clone() } else { masked_label(&c.kind, &c.label) }) } }
                            td { (field_label(c)) }
                            td { strong { (shown(c, &c.kept.value)) } br; span.muted { (c.kept.author) " · " (when(c.kept.at_ms)) } }
                            td { strong { (shown(c, &c.lost.value)) } br; span.muted { (c.lost.author) " · " (when(c.lost.at_ms)) } }
                            td {
                                @if !decides(user, c.village.as_deref()) {
                                    span.muted { "由其所属派出所处理" }
                                } @else {
                                form method="post" action={ "/console/conflicts/" (c.id) "/settle" } {
                                    input type="hidden" name="csrf" value=(user.csrf);
                                    button type="submit" name="choose" value="kept" { "采用现行值" }
                                    " "
                                    button.secondary type="submit" name="choose" value="lost" { "采用另一值" }
                                }
                                }
                            }
                        }
                    }
                    @if list.is_empty() { tr { td colspan="5" .muted { "没有待处理的冲突" } } }
                }
            }
        },
    )
}

/// Whether the console user decides on a record whose home village (or, for a move-in notice,
/// the village moved into) is `village`: administrators on any, reviewers in their villages.
/// The store decides the same (`store::scope::writable`); this only spares a button that would
/// be refused.
pub(super) fn decides(user: &ConsoleUser, village: Option<&str>) -> bool {
    user.account.role == crate::store::accounts::Role::Admin
        || village.is_some_and(|v| user.villages.iter().any(|mine| mine == v))
}

pub(super) fn admin_nav() -> Markup {
    html! {
        p {
            a href="/console/admin/users" { "账号" } " · "
            a href="/console/admin/devices" { "设备" } " · "
            a href="/console/admin/watch" { "关注名单" } " · "
            a href="/console/admin/audit" { "审计日志" }
        }
    }
}

pub(super) fn admin_users(
    user: &ConsoleUser,
    rows: &[(crate::store::accounts::Account, Vec<String>)],
    stations: &[crate::store::places::Station],
) -> Markup {
    layout(
        "账号管理",
        Some(user),
        &html! {
            h1 { "账号管理" }
            (admin_nav())
            table {
                thead { tr { th { "用户名" } th { "姓名" } th { "角色" } th { "派出所" } th { "负责村（社区）" } th { "状态" } th { "操作" } } }
                tbody {
                    @for (account, villages) in rows {
                        tr {
                            td { (account.username) }
                            td { (account.display_name) }
                            td { (match account.role { crate::store::accounts::Role::Officer => "民警", crate::store::accounts::Role::Reviewer => "审核员", crate::store::accounts::Role::Admin => "管理员" }) }
                            td { (account.station.as_deref().and_then(|s| stations.iter().find(|x| x.code == s)).map_or("", |s| s.name.as_str())) }
                            td {
                                @if account.role == crate::store::accounts::Role::Officer {
                                    form method="post" action={ "/console/admin/users/" (account.username) "/villages" } {
                                        input type="hidden" name="csrf" value=(user.csrf);
                                        input name="villages" value=(villages.join(",")) size="28";
                                        " " button.secondary type="submit" { "保存" }
                                    }
                                }
                            }
                            td { @if account.disabled { span.status-returned { "已停用" } } @else { "正常" } }
                            td {
                                @let verb = if account.disabled { "enable" } else { "disable" };
                                form method="post" action={ "/console/admin/users/" (account.username) "/" (verb) } {
                                    input type="hidden" name="csrf" value=(user.csrf);
                                    button.secondary type="submit" { (if account.disabled { "启用" } else { "停用" }) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "新增账号" }
            form.card.filters method="post" action="/console/admin/users" {
                input type="hidden" name="csrf" value=(user.csrf);
                label { "用户名" input name="username" required; }
                label { "姓名" input name="display_name"; }
                label { "角色" select name="role" { option value="officer" { "民警" } option value="reviewer" { "审核员" } option value="admin" { "管理员" } } }
                label { "派出所" select name="station" { option value="" { "无" } @for s in stations { option value=(s.code) { (s.name) } } } }
                label { "负责村（社区）代码，逗号分隔" input name="villages" size="28"; }
                label { "初始密码（至少8位）" input name="password" type="password" required; }
                button type="submit" { "新增" }
            }
        },
    )
}

pub(super) fn admin_devices(
    user: &ConsoleUser,
    rows: &[(crate::store::devices::Device, String)],
) -> Markup {
    layout(
        "设备管理",
        Some(user),
        &html! {
            h1 { "设备管理" }
            (admin_nav())
            table {
                thead { tr { th { "设备编号" } th { "名称" } th { "民警" } th { "最近同步" } th { "状态" } } }
                tbody {
                    @for (device, username) in rows {
                        tr {
                            td.muted { (device.id) }
                            td { (device.name) }
                            td { (username) }
                            td { (device.last_sync_ms.map(when).unwrap_or_else(|| "从未同步".into())) }
                            td {
                                @if device.revoked { span.status-returned { "已吊销" } } @else {
                                    form method="post" action={ "/console/admin/devices/" (device.id) "/revoke" } {
                                        input type="hidden" name="csrf" value=(user.csrf);
                                        button.danger type="submit" { "吊销（手机丢失）" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub(super) fn admin_audit(
    user: &ConsoleUser,
    page: &crate::store::contract::AuditPage,
    actions: &[String],
    filter: &crate::store::contract::AuditFilter,
) -> Markup {
    let chosen_action = filter.action.as_deref().unwrap_or("");
    let chosen_user = filter.username.as_deref().unwrap_or("");
    let older = page.older.map(|id| {
        let mut query = format!("?before={id}");
        for (key, value) in [("action", chosen_action), ("user", chosen_user)] {
            if !value.is_empty() {
                query.push_str(&format!("&{key}={}", query_escape(value)));
            }
        }
        query
    });
    layout(
        "审计日志",
        Some(user),
        &html! {
            h1 { "审计日志" }
            (admin_nav())
            form.filters method="get" action="/console/admin/audit" {
                label { "操作 "
                    select name="action" {
                        option value="" selected[chosen_action.is_empty()] { "全部" }
                        @for a in actions {
                            option value=(a) selected[a == chosen_action] { (a) }
                        }
                    }
                }
                label { " 人员 " input type="text" name="user" value=(chosen_user) placeholder="用户名，或 operator"; }
                button type="submit" { "筛选" }
            }
            table {
                thead { tr { th { "时间" } th { "人员" } th { "操作" } th { "对象" } th { "详情" } } }
                tbody {
                    @for r in &page.entries {
                        tr {
                            td { (when(r.at_ms)) }
                            // No account: the operator at the server's command line.
                            td { (r.username.as_deref().unwrap_or("命令行 / operator")) }
                            td { (r.action) }
                            td.muted { (r.target.as_deref().unwrap_or("")) }
                            td { (r.detail.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if page.entries.is_empty() { p.muted { "没有记录 / nothing audited matches" } }
            @if let Some(older) = older {
                p { a href={ "/console/admin/audit" (older) } { "更早的记录 →" } }
            }
            p.muted { "全部导出: baylink-server audit export > audit.csv" }
        },
    )
}

/// A query-string value, percent-encoded byte by byte where not a plain character.
pub(super) fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Who or what a record is, as lists show it: its ID number masked unless revealed (as lists
/// mask it, by the number itself: a passport's is masked whole).
pub(super) fn title(view: &RecordView, reveal: bool) -> String {
    view.summary().map_or_else(String::new, |summary| {
        match summary.id_number.filter(|_| !reveal) {
            Some(number) => summary.label.replace(&number, &mask_id(&number)),
            None => summary.label,
        }
    })
}

/// A field's stored value (JSON) as a page shows it: masked unless revealed, a choice by its
/// label.
pub(super) fn shown(kind: Option<EntityKind>, field: &str, value: &str, reveal: bool) -> String {
    let text = json_text(value);
    if let Some(hidden) = masked(field, &text).filter(|_| !reveal) {
        hidden
    } else {
        let choice = kind
            .and_then(|k| k.field(field))
            .and_then(|s| s.choice_label(&text));
        choice.map_or(text, str::to_owned)
    }
}

/// A field's name as a page shows it: its Chinese label where the data model has one.
pub(super) fn field_label(kind: Option<EntityKind>, field: &str) -> String {
    kind.and_then(|k| k.field(field))
        .map_or(field.to_owned(), |s| s.zh.to_owned())
}

/// Fields in the data model's form order, unknown ones (from newer apps) last.
pub(super) fn ordered(
    kind: Option<EntityKind>,
    fields: &BTreeMap<String, String>,
) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(fields.len());
    if let Some(kind) = kind {
        for spec in kind.fields() {
            if let Some((name, value)) = fields.get_key_value(spec.name) {
                out.push((name, value));
            }
        }
    }
    for (name, value) in fields {
        if !out.iter().any(|(n, _)| *n == name.as_str()) {
            out.push((name, value));
        }
    }
    out
}

fn json_text(value: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(v) => baylink_domain::to_text(&v),
        Err(_) => value.to_owned(),
    }
}

/// A record's label with every ID-number-like word masked. A person's label ends in her
/// document's number, which may be a passport's or a permit's of 5 to 30 letters and digits: every
/// such word of hers is masked (whole when under ten characters, as [`mask_id`] does); other
/// kinds' labels (a plate, an address) only of words shaped like a resident card's number.
pub(super) fn masked_label(kind: &str, label: &str) -> String {
    let person = kind == "person";
    label
        .split(' ')
        .map(|w| {
            let document = w.bytes().all(|b| b.is_ascii_alphanumeric())
                && if person {
                    w.len() >= 5 && w.bytes().any(|b| b.is_ascii_digit())
                } else {
                    w.len() >= 10 && w.bytes().filter(u8::is_ascii_digit).count() >= 6
                };
            if document { mask_id(w) } else { w.to_owned() }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn link_to(link: &Linked) -> Markup {
    let label = masked_label(&link.kind, &link.label);
    // A duplicate merged into the record shown is hidden because it was merged: said as such.
    let merged_here = link.incoming && link.field == "merged_into";
    html! {
        a href={ "/console/records/" (link.id) } { (if label.is_empty() { link.id.clone() } else { label }) }
        @if link.hidden && !merged_here { span.muted { "（已删除或已合并）" } }
    }
}

/// A review form sent back to its reviewer to correct: what is wrong, and what was typed.
pub(super) struct ReviewDraft {
    /// What is wrong.
    pub(super) error: String,
    /// The comment as typed.
    pub(super) comment: String,
}

/// How a reviewer came to a record's page, when a form led her there: said at its top.
pub(super) enum Arrival {
    /// From a decision on the record with this id (this one's own when none else waited).
    Reviewed {
        /// The record decided.
        before: String,
        /// How (its review status's code: `approved`, `returned`).
        decision: String,
        /// Whether no other record waits in her list.
        none_left: bool,
    },
    /// From merging the duplicate with this id into this one.
    Merged(String),
}

/// How she came to a record's page: what led her there, and the list she works through (its
/// filters), which its links and forms carry on.
pub(super) struct Came {
    /// What a form said at its top.
    pub(super) arrival: Option<Arrival>,
    /// The list's filters (none: her station's whole list).
    pub(super) queue: Filter,
    /// The record waiting next below this one in that list, to pass this one over to.
    pub(super) skip: Option<String>,
}

impl Came {
    /// Come from the list `queue` names, no form saying anything.
    pub(super) fn listed(queue: Filter) -> Came {
        Came {
            arrival: None,
            queue,
            skip: None,
        }
    }
}

/// A list's filters as a query string (its page left out), each value escaped.
pub(super) fn queue_of(filter: &Filter) -> String {
    [
        ("kind", &filter.kind),
        ("village", &filter.village),
        ("status", &filter.status),
        ("q", &filter.query),
        ("from", &filter.from),
        ("to", &filter.to),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        value
            .as_deref()
            .map(|value| format!("{name}={}", query_escape(value)))
    })
    .collect::<Vec<_>>()
    .join("&")
}

/// A record's page: its values, links, watch-list matches, review form and history.
pub(super) fn record(
    user: &ConsoleUser,
    id: &str,
    page: &RecordPage,
    reveal: bool,
    draft: Option<&ReviewDraft>,
    came: &Came,
    names: &BTreeMap<String, String>,
) -> Markup {
    let (view, links, watched) = (&page.view, page.links.as_slice(), &page.watched);
    let kind = EntityKind::parse(&view.kind);
    let title = page.line.clone().unwrap_or_else(|| title(view, reveal));
    let outgoing = |field: &str| links.iter().find(|l| !l.incoming && l.field == field);
    let merged_into = outgoing("merged_into");
    let deleted = view.deleted();
    let incoming: Vec<&Linked> = links.iter().filter(|l| l.incoming).collect();
    let label = |field: &str| field_label(kind, field);
    let sensitive = |field: &str| masked(field, "").is_some();
    // A reference in the history: by the label of the record it names while the record still
    // names it, else a link by its id (the page it opens checks who may see it).
    let referred = |field: &str, text: String| {
        let reference = kind
            .and_then(|k| k.field(field))
            .is_some_and(|s| s.names_a_record());
        let current = links
            .iter()
            .find(|l| !l.incoming && l.field == field && l.id == text);
        html! {
            @if let Some(link) = current.filter(|_| reference) { (link_to(link)) }
            @else if reference && uuid::Uuid::parse_str(&text).is_ok() { a href={ "/console/records/" (text) } { (text) } }
            @else { (text) }
        }
    };
    let shown = |field: &str, value: &str| shown(kind, field, value, reveal);
    let queue = queue_of(&came.queue);
    let status = view
        .fields
        .get("review_status")
        .map(|v| json_text(v))
        .unwrap_or_else(|| "pending".into());
    layout(
        "记录详情",
        Some(user),
        &html! {
            // Back to the list she opened it from, as she had filtered it.
            @if queue.is_empty() {
                p { a href="/console/records?status=pending" { "← 待审核列表" } }
            } @else {
                p { a href={ "/console/records?" (queue) } { "← 返回列表" } }
            }
            h1 { (kind_label(&view.kind)) " " (title) " " span.muted { (id) } }
            @for w in watched {
                div.card.notice role="alert" {
                    strong { "重点关注人员" } "："
                    @if let Some(region) = &w.region { "籍贯在关注地区 " (baylink_domain::watch::Rule::Region(region.clone()).describe()) } @else { "证件号码在关注名单上" }
                    " · " a href="/console/alerts" { @if w.open { "预警未处理" } @else { "预警已处理" } }
                }
            }
            // Come here from a decision on the record before, the queue's next (or this one
            // again, when no other was pending).
            @match &came.arrival {
                Some(Arrival::Reviewed { before, decision, none_left }) => div.card.notice role="status" {
                    @if *none_left && before == id {
                        "审核结果已保存（" (status_label(decision)) "）。没有其他待审核的记录了。" " " a href={ "/console/records?" (queue) } { "返回列表" }
                    } @else if status == "pending" {
                        "上一条记录的审核结果已保存（" (status_label(decision)) "），下面是下一条待审核记录。" " " a href={ "/console/records/" (before) } { "查看上一条" }
                    }
                },
                // Said only when the stored links say it: an address is anyone's to write.
                Some(Arrival::Merged(from)) => @if let Some(merged) = incoming.iter().find(|l| l.field == "merged_into" && l.id == *from) {
                    div.card.notice role="status" {
                        "已将重复记录 " (link_to(merged)) " 合并到本记录。" " " a href="/console/duplicates" { "返回疑似重复列表" }
                    }
                },
                _ => {}
            }
            @if let Some(draft) = draft {
                // At the top too: the form is below the fold at 1366×768.
                div.card.notice role="alert" { p.error { (draft.error) } a href="#review" { "转到审核" } }
            }
            @if let Some(target) = merged_into {
                div.card.notice { "此记录已作为重复记录合并到 " (link_to(target)) "；下面保留它合并前的内容和全部修改历史。" }
            }
            @if merged_into.is_some() {
                // Merged away, it is no one's to review: its own status stays as it was.
                div.card { "审核状态：已合并，不再审核" }
            } @else if deleted {
                div.card { "审核状态：已删除，不再审核" }
            } @else { div.card {
                "审核状态：" span class={ "status-" (status) } { (status_label(&status)) }
                @if let Some(comment) = view.fields.get("review_comment").map(|v| json_text(v)).filter(|c| !c.is_empty()) {
                    // Back to pending after the officer's correction: the comment is the last
                    // decision's, not one on what is shown now.
                    @if status == "pending" { " · 上次审核意见：" (comment) } @else { " · 意见：" (comment) }
                }
                // Decided from the top: at 1366×768 the form below is a scroll away on most
                // records. A return needs its reason, written below.
                @if status == "pending" && merged_into.is_none() && page.writable {
                    " "
                    form.inline method="post" action={ "/console/records/" (id) "/review" } {
                        input type="hidden" name="csrf" value=(user.csrf);
                        input type="hidden" name="queue" value=(queue);
                        button type="submit" name="decision" value="approve" { "通过" }
                    }
                    a href="#review" { "退回（填写原因）" }
                    @if let Some(next) = &came.skip {
                        " · " a href={ "/console/records/" (next) @if !queue.is_empty() { "?queue=" (query_escape(&queue)) } } { "跳过，看下一条" }
                    }
                }
            } }
            div.card {
                table {
                    tbody {
                        @for (field, value) in ordered(kind, &view.fields) {
                            tr { th { (label(field)) } td {
                                @if let Some(link) = outgoing(field) { (link_to(link)) }
                                @else if let Some(name) = (field == "village").then(|| names.get(&json_text(value))).flatten() {
                                    (name) " " span.muted { (json_text(value)) }
                                }
                                @else { (shown(field, value)) }
                            } }
                        }
                    }
                }
                @if !reveal && view.fields.keys().any(|f| sensitive(f)) {
                    p { a href={ "/console/records/" (id) "?reveal=1" } { "显示完整证件号码和电话（将记录在审计日志中）" } }
                }
            }
            @if !incoming.is_empty() {
                h2 { "关联记录" }
                table {
                    thead { tr { th { "类型" } th { "关系" } th { "记录" } } }
                    tbody {
                        @for link in &incoming {
                            tr {
                                td { (kind_label(&link.kind)) }
                                td { (if link.field == "merged_into" { "合并到本记录".to_owned() } else { EntityKind::parse(&link.kind).and_then(|k| k.field(&link.field)).map_or(link.field.clone(), |s| format!("{}为本记录", s.zh)) }) }
                                td { (link_to(link)) }
                            }
                        }
                    }
                }
            }
            @if merged_into.is_none() && !deleted && !page.writable { div.card.notice id="review" {
                "此人为迁入人员：可在此查看，审核和合并由其所属派出所进行。"
            } }
            @if merged_into.is_none() && !deleted && page.writable { div.card id="review" {
                h2 { "审核" }
                form method="post" action={ "/console/records/" (id) "/review" } {
                    input type="hidden" name="csrf" value=(user.csrf);
                    input type="hidden" name="queue" value=(queue);
                    @if let Some(draft) = draft {
                        p.error role="alert" { (draft.error) }
                    }
                    p { textarea name="comment" rows="2" cols="60" placeholder="退回时请填写原因" {
                        (draft.map(|d| d.comment.as_str()).unwrap_or_default())
                    } }
                    button type="submit" name="decision" value="approve" { "通过" }
                    " "
                    button.danger type="submit" name="decision" value="return" { "退回" }
                }
            } }
            h2 { "修改历史" }
            table {
                thead { tr { th { "时间" } th { "人员" } th { "设备" } th { "字段" } th { "原值" } th { "新值" } } }
                tbody {
                    @for h in view.history.iter().rev() {
                        tr {
                            td { (when(h.at_ms)) }
                            td { (h.username.as_deref().unwrap_or("")) }
                            td.muted { (h.device.as_deref().map(|d| d.chars().take(8).collect::<String>()).unwrap_or_default()) }
                            td { (label(&h.field)) }
                            @let before = h.old_value.as_deref().map(|v| shown(&h.field, v));
                            @let after = shown(&h.field, &h.value);
                            td { (referred(&h.field, before.clone().unwrap_or_default())) }
                            td {
                                (referred(&h.field, after.clone()))
                                // Two numbers masked alike (a corrected digit past the mask):
                                // the change is said, its digits shown only when revealed.
                                @if before.as_deref() == Some(after.as_str()) && h.old_value.as_deref() != Some(h.value.as_str()) {
                                    " " span.muted { "（号码已改，显示完整号码可查看）" }
                                }
                                @if !h.won { span.muted { "（未生效）" } }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_nothing_the_page_does_not_show_already() {
        assert_eq!(mask_id("11010519491231002X"), "110105************");
        assert_eq!(mask_phone("13800138000"), "138****8000");
        assert_eq!(mask_phone("0752-5512345"), "075****2345");
        assert_eq!(mask_phone("+85291234567"), "+852****4567");
        assert_eq!(mask_phone("+12345678"), "+****5678");
        assert_eq!(mask_id("E123"), "****");
    }

    #[test]
    fn a_persons_label_masks_a_passports_number_whole_and_a_plate_stays() {
        assert_eq!(
            masked_label("person", "John Smith E1234567"),
            "John Smith ********"
        );
        assert_eq!(masked_label("person", "陈台生 87654321"), "陈台生 ********");
        assert_eq!(
            masked_label("person", "王芳 11010519491231002X"),
            "王芳 110105************"
        );
        assert_eq!(
            masked_label("vehicle", "粤LD12345 比亚迪 白"),
            "粤LD12345 比亚迪 白"
        );
        assert_eq!(masked_label("house", "桥西路8号 A1203"), "桥西路8号 A1203");
    }

    #[test]
    fn a_search_is_audited_when_it_reaches_past_a_mask() {
        // Names, plates, addresses.
        for shown in ["王芳", "粤L", "澳头石化大道"] {
            assert!(!searches_past_masks(shown), "{shown}");
        }
        // Past it: any ID number's digits (a region's six can read a permit masked whole), a
        // phone's middle, a passport's letters.
        for hidden in [
            "138",
            "441303",
            "876543",
            "4413031990",
            "1380013",
            "07525512",
            "E1234",
            "11010519491231002x",
            "+8529",
        ] {
            assert!(searches_past_masks(hidden), "{hidden}");
        }
    }
}
