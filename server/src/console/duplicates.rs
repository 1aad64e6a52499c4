//! Duplicate persons: candidate pairs side by side; merge one into the other (it redirects, its
//! history stays) or record that they are two people. A merge cannot be undone: the list's
//! buttons open a page comparing the two records, whose form merges them.

use std::collections::BTreeMap;

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{field_label, layout, mask_id, ordered, shown, title};
use super::{ConsoleUser, PageError};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::duplicates::{Pair, Side};
use crate::store::records::{RecordPage, Reveal};

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

/// The two records of a merge, as the list's buttons name them.
#[derive(Deserialize)]
pub(super) struct MergePair {
    from: String,
    into: String,
}

/// The page that asks before a merge: both records side by side, masked, their differences
/// marked, and what the merge does. Opening it changes nothing.
pub(super) async fn confirm(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(pair): Query<MergePair>,
) -> Result<Response, PageError> {
    let (from, into) = (record_id(&pair.from)?, record_id(&pair.into)?);
    let merged = state
        .store
        .record_page(user.caller(), from, Reveal::Masked)
        .await?;
    let kept = state
        .store
        .record_page(user.caller(), into, Reveal::Masked)
        .await?;
    let stations = state.store.stations().await?;
    let names = stations.into_iter().flat_map(|s| s.villages).collect();
    let from = (from.to_string(), merged);
    let into = (into.to_string(), kept);
    Ok(confirm_page(&user, &from, &into, &names).into_response())
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

/// The button that opens the page asking before `from` is merged into `into`.
fn merge_button(from: &str, into: &str, text: &str) -> Markup {
    html! {
        form.inline method="get" action="/console/duplicates/merge" {
            input type="hidden" name="from" value=(from);
            input type="hidden" name="into" value=(into);
            button type="submit" { (text) }
        }
    }
}

fn confirm_page(
    user: &ConsoleUser,
    (from, merged): &(String, RecordPage),
    (into, kept): &(String, RecordPage),
    names: &BTreeMap<String, String>,
) -> Markup {
    let kind = baylink_domain::EntityKind::parse(&kept.view.kind);
    // Every field either holds, in the form's order; the merged record's own ones after.
    let mut fields: Vec<&str> = ordered(kind, &kept.view.fields)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    for (field, _) in ordered(kind, &merged.view.fields) {
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    let value = |page: &RecordPage, field: &str| {
        let shown = shown(kind, field, page.view.fields.get(field)?, false);
        // A village by its name, as the record's page shows it.
        Some(match names.get(&shown).filter(|_| field == "village") {
            Some(name) => format!("{name} {shown}"),
            None => shown,
        })
    };
    let moved = merged.links.iter().filter(|l| l.incoming).count();
    let (kept_title, merged_title) = (title(&kept.view, false), title(&merged.view, false));
    layout(
        "确认合并",
        Some(user),
        &html! {
            p { a href="/console/duplicates" { "← 疑似重复列表" } }
            h1 { "确认合并" }
            div.card.notice role="alert" {
                "将 " a href={ "/console/records/" (from) } { (merged_title) } " 合并到 "
                a href={ "/console/records/" (into) } { (kept_title) } "："
                "前者转向后者，不再出现在列表中，其修改历史保留；"
                @if moved > 0 { "它的 " (moved) " 条关联记录（居住、车辆等）改到保留的记录上；" }
                "保留的记录缺少的内容由被合并的记录补上。" strong { "合并后不能撤销。" }
            }
            table {
                thead { tr { th { "" } th { "保留：" (kept_title) } th { "合并：" (merged_title) } } }
                tbody {
                    @for field in &fields {
                        @let (a, b) = (value(kept, field), value(merged, field));
                        tr {
                            th { (field_label(kind, field)) }
                            @if a != b {
                                td { strong { (a.clone().unwrap_or_else(|| "—".into())) } }
                                td { strong { (b.clone().unwrap_or_else(|| "—".into())) } }
                            } @else {
                                td { (a.clone().unwrap_or_else(|| "—".into())) }
                                td { (b.clone().unwrap_or_else(|| "—".into())) }
                            }
                        }
                    }
                }
            }
            p.muted { "加粗的是两条记录不同的内容。证件号码和电话已部分隐藏，需要核对时可打开记录查看完整号码（将记录在审计日志中）。" }
            form.inline method="post" action="/console/duplicates/merge" {
                input type="hidden" name="csrf" value=(user.csrf);
                input type="hidden" name="from" value=(from);
                input type="hidden" name="into" value=(into);
                button type="submit" { "确认合并" }
            }
            " " a href="/console/duplicates" { "取消" }
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
                                } @else {
                                    (merge_button(&pair.b.id, &pair.a.id, "保留甲，合并乙…"))
                                }
                                @if pair.a.linked_elsewhere {
                                    span.muted { "甲有其他派出所的关联记录，合并甲须由管理员进行" } br;
                                } @else {
                                    (merge_button(&pair.a.id, &pair.b.id, "保留乙，合并甲…"))
                                }
                                form.inline method="post" action="/console/duplicates/dismiss" {
                                    input type="hidden" name="csrf" value=(user.csrf);
                                    input type="hidden" name="a" value=(pair.a.id);
                                    input type="hidden" name="b" value=(pair.b.id);
                                    button.secondary type="submit" { "不是同一人" }
                                }
                            }
                        }
                    }
                    @if pairs.is_empty() && !stopped { tr { td colspan="4" .muted { "没有疑似重复的人员" } } }
                }
            }
        },
    )
}
