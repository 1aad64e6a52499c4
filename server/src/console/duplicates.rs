//! Duplicate persons: candidate pairs side by side; merge one into the other (it redirects, its
//! history stays) or record that they are two people. Neither can be undone: the list leads to
//! a page comparing the two records, whose forms decide.

use std::collections::BTreeMap;

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{field_label, layout, link_to, mask_id, ordered, shown, title};
use super::{ConsoleUser, PageError};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::duplicates::{Pair, Side};
use crate::store::records::{Linked, RecordPage, Reveal};

/// Most pairs on one page; a reviewer settles them a page at a time.
const PAIRS: usize = 200;

pub(super) async fn list(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, PageError> {
    let pairs = state
        .store
        .duplicate_pairs(user.villages.clone(), PAIRS)
        .await?;
    Ok(page(&user, &pairs.pairs, pairs.stopped).into_response())
}

/// A candidate pair, as the list names it; `reveal` asks for both numbers in full (audited).
#[derive(Deserialize)]
pub(super) struct PairQuery {
    #[serde(default)]
    a: String,
    #[serde(default)]
    b: String,
    #[serde(default)]
    reveal: Option<String>,
}

/// The page a reviewer decides a pair on: both records side by side, their differences marked,
/// what links to each, what a merge does; then merge either way, or say they are two people.
/// Neither can be undone, so the list only leads here. Opening it changes nothing but the audit
/// log, when the numbers are revealed.
pub(super) async fn pair(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<PairQuery>,
) -> Result<Response, PageError> {
    // Signing in again returns to a page's path without its query: back to the list.
    if query.a.is_empty() && query.b.is_empty() {
        return Ok(Redirect::to("/console/duplicates").into_response());
    }
    let (a, b) = (record_id(&query.a)?, record_id(&query.b)?);
    let reveal = if query.reveal.as_deref() == Some("1") {
        Reveal::Full
    } else {
        Reveal::Masked
    };
    // Both seen before either number is handed out: a reveal of one the reviewer may not see
    // fails before the other's is audited.
    let (first, second) = (
        state
            .store
            .record_page(user.caller(), a, Reveal::Masked)
            .await?,
        state
            .store
            .record_page(user.caller(), b, Reveal::Masked)
            .await?,
    );
    let (first, second) = if reveal == Reveal::Full {
        (
            state.store.record_page(user.caller(), a, reveal).await?,
            state.store.record_page(user.caller(), b, reveal).await?,
        )
    } else {
        (first, second)
    };
    // Which of the two may not be merged away by her (another station's records name it), as
    // the list says: read as the list reads it. A pair not listed (dismissed, merged, beyond
    // the list's bound) offers both ways; the merge itself refuses what it must.
    let listed = state
        .store
        .duplicate_pairs(user.villages.clone(), PAIRS)
        .await?;
    let (a_text, b_text) = (a.to_string(), b.to_string());
    let this = listed
        .pairs
        .iter()
        .find(|p| [&p.a.id, &p.b.id].contains(&&a_text) && [&p.a.id, &p.b.id].contains(&&b_text));
    let elsewhere = |id: &str| {
        this.is_some_and(|p| {
            [&p.a, &p.b]
                .iter()
                .any(|s| s.id == id && s.linked_elsewhere)
        })
    };
    let kept_only = [elsewhere(&a_text), elsewhere(&b_text)];
    // Whether two masked values differ where the mask hides them is said of a listed pair
    // only: of any two records an address names, it would tell unaudited whether their
    // numbers are one.
    let listed_pair = this.is_some();
    let stations = state.store.stations().await?;
    let names = stations.into_iter().flat_map(|s| s.villages).collect();
    let sides = [(a_text, first), (b_text, second)];
    let how = Shown {
        kept_only,
        reveal: reveal == Reveal::Full,
        behind_masks: listed_pair || reveal == Reveal::Full,
    };
    Ok(pair_page(&user, &sides, &how, &names).into_response())
}

/// A merge: `from` redirects to `into`.
#[derive(Deserialize)]
pub(super) struct MergeForm {
    csrf: String,
    from: String,
    into: String,
}

pub(super) async fn merge(
    State(state): State<AppState>,
    user: ConsoleUser,
    Form(form): Form<MergeForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    let (from, into) = (record_id(&form.from)?, record_id(&form.into)?);
    state.store.merge_records(user.caller(), from, into).await?;
    Ok(Redirect::to(&format!("/console/records/{into}?merged={from}")).into_response())
}

/// Two persons a reviewer says are different people.
#[derive(Deserialize)]
pub(super) struct DismissForm {
    csrf: String,
    a: String,
    b: String,
}

pub(super) async fn dismiss(
    State(state): State<AppState>,
    user: ConsoleUser,
    Form(form): Form<DismissForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    let (a, b) = (record_id(&form.a)?, record_id(&form.b)?);
    state.store.dismiss_pair(user.caller(), a, b).await?;
    Ok(Redirect::to("/console/duplicates").into_response())
}

/// A record id from a form; anything else names no record.
fn record_id(text: &str) -> Result<uuid::Uuid, AppError> {
    uuid::Uuid::parse_str(text.trim()).map_err(|_| AppError::NotFound(format!("no record {text}")))
}

fn side(s: &Side) -> Markup {
    let label = match &s.id_number {
        Some(id) => s.label.replace(id.as_str(), &mask_id(id)),
        None => s.label.clone(),
    };
    html! {
        a href={ "/console/records/" (s.id) } { (label) }
        br;
        span.muted { "出生 " (s.birth_date.as_deref().unwrap_or("—")) " · 采集 " (s.created_by.as_deref().unwrap_or("—")) }
    }
}

/// The button that opens a pair's page, where it is decided.
fn pair_button(a: &str, b: &str) -> Markup {
    html! {
        form.inline method="get" action="/console/duplicates/pair" {
            input type="hidden" name="a" value=(a);
            input type="hidden" name="b" value=(b);
            button type="submit" { "核对并处理…" }
        }
    }
}

/// How a pair's page shows it.
struct Shown {
    /// Which side (甲, 乙) another station's records name: not offered for merging away.
    kept_only: [bool; 2],
    /// Both numbers in full (audited).
    reveal: bool,
    /// Whether differences the masks hide are marked (a listed pair's, or revealed).
    behind_masks: bool,
}

fn pair_page(
    user: &ConsoleUser,
    sides: &[(String, RecordPage); 2],
    how: &Shown,
    names: &BTreeMap<String, String>,
) -> Markup {
    let [(a, first), (b, second)] = sides;
    let kind = baylink_domain::EntityKind::parse(&first.view.kind);
    // Every field either holds, in the form's order; where a record went is said above.
    let mut union = first.view.fields.clone();
    union.extend(second.view.fields.clone());
    let fields: Vec<&str> = ordered(kind, &union)
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| *f != "merged_into")
        .collect();
    let value = |page: &RecordPage, field: &str| {
        let shown = shown(kind, field, page.view.fields.get(field)?, how.reveal);
        // A village by its name, as the record's page shows it.
        Some(match names.get(&shown).filter(|_| field == "village") {
            Some(name) => format!("{name} {shown}"),
            None => shown,
        })
    };
    let merged_into = |page: &RecordPage| {
        page.links
            .iter()
            .find(|l| !l.incoming && l.field == "merged_into")
            .cloned()
    };
    let gone: Vec<(&str, Linked)> = [("甲", first), ("乙", second)]
        .into_iter()
        .filter_map(|(side, page)| Some((side, merged_into(page)?)))
        .collect();
    let deleted: Vec<&str> = [("甲", first), ("乙", second)]
        .into_iter()
        .filter(|(_, page)| page.view.deleted())
        .map(|(side, _)| side)
        .collect();
    // Only two persons are a pair (an address may name anything), both hers to change (a
    // person who moved in is seen here and changed by her home station).
    let a_pair = a != b && first.view.kind == "person" && second.view.kind == "person";
    let hers = first.writable && second.writable;
    let open = gone.is_empty() && deleted.is_empty() && a_pair && hers;
    let titles = [
        title(&first.view, how.reveal),
        title(&second.view, how.reveal),
    ];
    let linked = |page: &RecordPage| -> Vec<Linked> {
        page.links
            .iter()
            .filter(|l| l.incoming && l.field != "merged_into")
            .cloned()
            .collect()
    };
    let (first_links, second_links) = (linked(first), linked(second));
    let cell = |text: Option<String>, differs: bool| {
        let text = text.unwrap_or_else(|| "—".into());
        html! { td { @if differs { strong { (text) } } @else { (text) } } }
    };
    let action = |from: &str, into: &str, text: &str| {
        html! {
            form.inline method="post" action="/console/duplicates/merge" {
                input type="hidden" name="csrf" value=(user.csrf);
                input type="hidden" name="from" value=(from);
                input type="hidden" name="into" value=(into);
                button type="submit" { (text) }
            }
        }
    };
    layout(
        "核对疑似重复",
        Some(user),
        &html! {
            p { a href="/console/duplicates" { "← 疑似重复列表" } }
            h1 { "核对疑似重复人员" }
            @if !a_pair {
                div.card.notice role="status" { "这两条记录不是可合并的一对（须是两个不同的人员）。" }
            } @else if !deleted.is_empty() {
                @for side in &deleted {
                    div.card.notice role="status" { "人员" (side) "已被删除，无需再处理。" }
                }
            } @else if !hers {
                div.card.notice role="status" { "其中有其他派出所辖区的人员（迁入本辖区居住），须由其所属派出所处理。" }
            } @else if gone.is_empty() {
                div.card.notice role="alert" {
                    "合并：被合并的记录转向保留的记录，不再出现在列表中，修改历史保留；它的居住、车辆等关联记录改到保留的记录上；保留的记录缺少的内容由被合并的记录补上。"
                    "“不是同一人”：这一对不再作为疑似重复列出。"
                    strong { "两者都不能撤销。" }
                }
            } @else {
                @for (side, target) in &gone {
                    div.card.notice role="status" { "人员" (side) "已合并到 " (link_to(target)) "，无需再处理。" }
                }
            }
            table {
                thead { tr {
                    th { "" }
                    th { "人员甲：" a href={ "/console/records/" (a) } { (titles[0]) } }
                    th { "人员乙：" a href={ "/console/records/" (b) } { (titles[1]) } }
                } }
                tbody {
                    @for field in &fields {
                        @let (x, y) = (value(first, field), value(second, field));
                        // Judged on the values themselves: two numbers of one county differ
                        // only where the mask hides them.
                        @let differs = if how.behind_masks {
                            first.view.fields.get(*field) != second.view.fields.get(*field)
                        } else {
                            x != y
                        };
                        tr {
                            th { (field_label(kind, field)) }
                            @if differs && x == y {
                                td { strong { (x.clone().unwrap_or_else(|| "—".into())) } span.muted { "（隐藏部分不同）" } }
                                td { strong { (y.clone().unwrap_or_else(|| "—".into())) } span.muted { "（隐藏部分不同）" } }
                            } @else {
                                (cell(x, differs)) (cell(y, differs))
                            }
                        }
                    }
                    tr {
                        th { "关联记录" }
                        @for links in [&first_links, &second_links] {
                            td {
                                @for link in links { (link_to(link)) br; }
                                @if links.is_empty() { "—" }
                            }
                        }
                    }
                }
            }
            p.muted {
                "加粗的是两条记录不同的内容。"
                @if !how.reveal {
                    "证件号码和电话已部分隐藏：" a href={ "/console/duplicates/pair?a=" (a) "&b=" (b) "&reveal=1" } { "显示两人的完整证件号码和电话（将记录在审计日志中）" }
                }
            }
            @if open {
                @if how.kept_only[1] {
                    span.muted { "乙有其他派出所的关联记录，合并乙须由管理员进行" } " "
                } @else {
                    (action(b, a, "保留甲，合并乙")) " "
                }
                @if how.kept_only[0] {
                    span.muted { "甲有其他派出所的关联记录，合并甲须由管理员进行" } " "
                } @else {
                    (action(a, b, "保留乙，合并甲")) " "
                }
                form.inline method="post" action="/console/duplicates/dismiss" {
                    input type="hidden" name="csrf" value=(user.csrf);
                    input type="hidden" name="a" value=(a);
                    input type="hidden" name="b" value=(b);
                    button.secondary type="submit" { "不是同一人" }
                }
                " " a href="/console/duplicates" { "取消" }
            }
        },
    )
}

fn page(user: &ConsoleUser, pairs: &[Pair], stopped: bool) -> Markup {
    layout(
        "疑似重复",
        Some(user),
        &html! {
            h1 { "疑似重复人员" }
            p.muted { "姓名与出生日期相同，或证件号码只差一位的人员。合并后被合并的记录转向保留的记录，修改历史全部保留；居住、车辆等关联改到保留的记录上。" }
            // The search stopped at its bound (thousands of namesakes born the same day): an
            // empty or short list does not mean there are no more.
            @if stopped {
                div.card.notice { "同名同出生日期的人员过多，本次只比较了其中一部分：下列之外可能还有疑似重复，可在人员列表中按姓名查找。" }
            }
            table {
                thead { tr { th { "人员甲" } th { "人员乙" } th { "原因" } th { "处理" } } }
                tbody {
                    @for pair in pairs {
                        tr {
                            td { (side(&pair.a)) }
                            td { (side(&pair.b)) }
                            td {
                                @if pair.same_name_and_birth_date { "姓名、出生日期相同" br; }
                                @if pair.id_number_one_apart { "证件号码相差一位" }
                            }
                            td.actions {
                                @if pair.b.linked_elsewhere {
                                    span.muted { "乙有其他派出所的关联记录，合并乙须由管理员进行" } br;
                                }
                                @if pair.a.linked_elsewhere {
                                    span.muted { "甲有其他派出所的关联记录，合并甲须由管理员进行" } br;
                                }
                                (pair_button(&pair.a.id, &pair.b.id))
                            }
                        }
                    }
                    @if pairs.is_empty() && !stopped { tr { td colspan="4" .muted { "没有疑似重复的人员" } } }
                }
            }
        },
    )
}
