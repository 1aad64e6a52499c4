//! Duplicate persons: candidate pairs side by side; merge one into the other (it redirects, its
//! history stays) or record that they are two people.

use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{layout, mask_id};
use super::{ConsoleUser, PageError};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::duplicates::{Pair, Side};

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

fn merge_form(user: &ConsoleUser, from: &str, into: &str, text: &str) -> Markup {
    html! {
        form.inline method="post" action="/console/duplicates/merge" {
            input type="hidden" name="csrf" value=(user.csrf);
            input type="hidden" name="from" value=(from);
            input type="hidden" name="into" value=(into);
            button type="submit" { (text) }
        }
    }
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
                                    (merge_form(user, &pair.b.id, &pair.a.id, "保留甲，合并乙"))
                                }
                                @if pair.a.linked_elsewhere {
                                    span.muted { "甲有其他派出所的关联记录，合并甲须由管理员进行" } br;
                                } @else {
                                    (merge_form(user, &pair.a.id, &pair.b.id, "保留乙，合并甲"))
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
