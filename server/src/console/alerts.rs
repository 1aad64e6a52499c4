//! Alerts and the watch list: the alert list with acknowledge (reviewers, their station's
//! persons), and the watch-list page where administrators add and remove rules.

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use baylink_domain::watch::Rule;
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{admin_nav, decides, layout, mask_id, masked_label, when};
use super::{ConsoleUser, CsrfForm, PageError};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::alerts::{Alert, AlertsShown, StoredRule};

/// Whether to list acknowledged alerts too.
#[derive(Deserialize, Default)]
pub(super) struct AlertQuery {
    all: Option<u8>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<AlertQuery>,
) -> Result<Response, PageError> {
    let all = query.all == Some(1);
    let shown = if all {
        AlertsShown::All
    } else {
        AlertsShown::Open
    };
    let rows = state
        .store
        .alerts(user.villages.clone(), shown, 500)
        .await?;
    Ok(page(&user, &rows, all).into_response())
}

pub(super) async fn acknowledge(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    let caller = user.caller();
    state.store.acknowledge_alert(caller, id).await?;
    Ok(Redirect::to("/console/alerts").into_response())
}

fn describe(alert: &Alert) -> String {
    if let Some(village) = &alert.moved_into {
        let home = alert.village.as_deref().unwrap_or("?");
        return format!("外村人员迁入 {village} 居住（户所在村 {home}）");
    }
    match alert.rule.as_ref() {
        Some(rule @ Rule::IdNumber(_)) => format!("关注证件号码 {}", mask_id(&rule.describe())),
        Some(rule @ Rule::Region(_)) => format!("来自风险地区 {}", rule.describe()),
        None => "未知规则".into(),
    }
}

fn page(user: &ConsoleUser, rows: &[Alert], all: bool) -> Markup {
    layout(
        "预警",
        Some(user),
        &html! {
            h1 { "预警" }
            p {
                @if all { a href="/console/alerts" { "只看未处理" } } @else { a href="/console/alerts?all=1" { "包括已处理" } }
            }
            table {
                thead { tr { th { "时间" } th { "人员" } th { "原因" } th { "同步民警" } th { "处理" } } }
                tbody {
                    @for alert in rows {
                        @let label = masked_label("person", &alert.label);
                        tr {
                            td { (when(alert.raised_ms)) }
                            td {
                                a href={ "/console/records/" (alert.entity) } { (if label.is_empty() { alert.entity.clone() } else { label }) }
                                @if alert.deleted { " （已删除）" }
                            }
                            td { (describe(alert)) }
                            td { (alert.officer.as_deref().unwrap_or("（新增规则时发现）")) }
                            td {
                                @if let Some((at, by)) = &alert.acknowledged {
                                    span.muted { (by) " 于 " (when(*at)) " 已处理" }
                                } @else if !decides(user, alert.moved_into.as_deref().or(alert.village.as_deref())) {
                                    span.muted { (if alert.moved_into.is_some() { "由迁入地派出所处理" } else { "由其所属派出所处理" }) }
                                } @else {
                                    form method="post" action={ "/console/alerts/" (alert.id) "/acknowledge" } {
                                        input type="hidden" name="csrf" value=(user.csrf);
                                        button type="submit" { "确认已处理" }
                                    }
                                }
                            }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="5" .muted { "没有预警" } } }
                }
            }
        },
    )
}

pub(super) async fn rules(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, PageError> {
    user.require_admin()?;
    let rows = state.store.watch_rules().await?;
    Ok(rules_page(&user, &rows, None).into_response())
}

/// The form that adds a watch-list rule.
#[derive(Deserialize)]
pub(super) struct RuleForm {
    csrf: String,
    /// `id_number` or `region`.
    kind: String,
    value: String,
    #[serde(default)]
    note: String,
}

pub(super) async fn add_rule(
    State(state): State<AppState>,
    user: ConsoleUser,
    Form(form): Form<RuleForm>,
) -> Result<Response, PageError> {
    user.require_admin()?;
    user.check_csrf(&form.csrf)?;
    let parsed = match form.kind.as_str() {
        "id_number" => Rule::id_number(&form.value),
        "region" => Rule::region(&form.value),
        _ => return Err(AppError::BadRequest("kind: id_number or region".into()).into()),
    };
    let rule = match parsed {
        Ok(rule) => rule,
        Err(reason) => {
            // A mistyped code is the administrator's to correct: show the list with the reason.
            let rows = state.store.watch_rules().await?;
            let message = format!("{}：{}", form.value.trim(), reason.zh);
            return Ok((
                axum::http::StatusCode::BAD_REQUEST,
                rules_page(&user, &rows, Some(&message)),
            )
                .into_response());
        }
    };
    let account = user.account.id;
    state.store.add_watch_rule(account, rule, form.note).await?;
    Ok(Redirect::to("/console/admin/watch").into_response())
}

pub(super) async fn remove_rule(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.require_admin()?;
    user.check_csrf(&form.csrf)?;
    let account = user.account.id;
    state.store.remove_watch_rule(account, id).await?;
    Ok(Redirect::to("/console/admin/watch").into_response())
}

fn rules_page(user: &ConsoleUser, rows: &[StoredRule], error: Option<&str>) -> Markup {
    layout(
        "关注名单",
        Some(user),
        &html! {
            h1 { "关注名单与风险地区" }
            (admin_nav())
            @if let Some(error) = error { p.error { (error) } }
            table {
                thead { tr { th { "类型" } th { "内容" } th { "说明" } th { "添加人" } th { "添加时间" } th { "未处理预警" } th { "操作" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { (match r.rule { Rule::IdNumber(_) => "证件号码", Rule::Region(_) => "风险地区" }) }
                            td { (r.rule.describe()) }
                            td { (r.note) }
                            td { (r.added_by.as_deref().unwrap_or("")) }
                            td { (when(r.added_ms)) }
                            td.num { a href="/console/alerts" { (r.open_alerts) } }
                            td {
                                form method="post" action={ "/console/admin/watch/" (r.id) "/remove" } {
                                    input type="hidden" name="csrf" value=(user.csrf);
                                    button.secondary type="submit" { "移除" }
                                }
                            }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="7" .muted { "名单为空" } } }
                }
            }
            h2 { "添加" }
            form.card.filters method="post" action="/console/admin/watch" {
                input type="hidden" name="csrf" value=(user.csrf);
                label { "类型" select name="kind" { option value="region" { "风险地区（行政区划代码）" } option value="id_number" { "证件号码" } } }
                label { "代码或号码" input name="value" required size="22" placeholder="如 420100 或 证件号码"; }
                label { "说明" input name="note" size="28"; }
                button type="submit" { "添加" }
            }
            p.muted { "风险地区可填省（如 420000）、市（420100）或区县（420106）代码；籍贯在其中的人员同步时产生预警。添加时已登记的人员也会产生预警。" }
        },
    )
}
