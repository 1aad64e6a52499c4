//! A reviewer's decision planned before it is written: who may decide on a record and what the
//! decision writes. Pure, like the push's planner: the store reads the record's villages, this
//! decides, the store writes and audits.

use std::collections::BTreeSet;

use baylink_domain::{Date, EntityKind};
use serde_json::Value;

use crate::store::caller::Role;

/// A reviewer's decision on a record, with the reviewer's comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The record is right (a comment is kept when given: a note to the officer).
    Approve(String),
    /// The record goes back to its officer, with what to correct (required).
    Return(String),
}

/// Why a decision is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewRefused {
    /// The record is not in the reviewer's villages (answered as no such record).
    NotVisible,
    /// A return without a comment: the officer would not know what to correct.
    NoComment,
    /// A comment the schema refuses (too long, hidden characters), with why.
    BadComment(String),
}

/// What an accepted decision writes: the record's review fields, and the audited action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewPlan {
    /// `review_status` and `review_comment`, in that order.
    pub fields: [(&'static str, Value); 2],
    /// The audit log's action (`approve`, `return`).
    pub action: &'static str,
    /// The comment, trimmed, if any (the audit entry's detail).
    pub comment: Option<String>,
}

/// Decides a review: administrators decide on any record, reviewers on those in their
/// villages (`scope` is the villages the record is in), officers on none; a return needs a
/// comment, and a comment is held to the schema's rule for `review_comment` as any value is.
pub fn plan_review(
    role: Role,
    villages: &[String],
    scope: &BTreeSet<String>,
    verdict: &Verdict,
    today: Date,
) -> Result<ReviewPlan, ReviewRefused> {
    let allowed = role == Role::Admin
        || (role == Role::Reviewer && scope.iter().any(|v| villages.contains(v)));
    if !allowed {
        return Err(ReviewRefused::NotVisible);
    }
    let (status, action, comment) = match verdict {
        Verdict::Approve(comment) => ("approved", "approve", comment.trim()),
        Verdict::Return(comment) => ("returned", "return", comment.trim()),
    };
    if action == "return" && comment.is_empty() {
        return Err(ReviewRefused::NoComment);
    }
    // Held to the schema's rule for the field, as an officer's values are (its writer is the
    // console, which the push's checks skip): a field every kind has, so any kind's rule.
    let spec = EntityKind::Person.field("review_comment");
    let comment_value = match (spec, comment) {
        (_, "") => Value::Null,
        (Some(spec), text) => baylink_domain::validate::parse_value(spec, text, today)
            .map_err(|why| ReviewRefused::BadComment(format!("{} / {}", why.zh, why.en)))?,
        (None, text) => Value::String(text.to_owned()),
    };
    let comment = comment_value.as_str().map(str::to_owned);
    Ok(ReviewPlan {
        fields: [
            ("review_status", Value::String(status.into())),
            ("review_comment", comment_value),
        ],
        action,
        comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(
        role: Role,
        villages: &[String],
        scope: &BTreeSet<String>,
        verdict: &Verdict,
    ) -> Result<ReviewPlan, ReviewRefused> {
        plan_review(role, villages, scope, verdict, Date::from_days(20_000))
    }

    #[test]
    fn a_comment_is_held_to_the_schemas_rule() {
        let (station, here) = (["A".to_owned()], villages(&["A"]));
        let hidden = Verdict::Return("\u{202e}abc".into());
        assert!(matches!(
            decide(Role::Reviewer, &station, &here, &hidden),
            Err(ReviewRefused::BadComment(m)) if m.contains("U+202E")
        ));
        let long = Verdict::Approve("长".repeat(501));
        assert!(matches!(
            decide(Role::Reviewer, &station, &here, &long),
            Err(ReviewRefused::BadComment(_))
        ));
        assert!(
            decide(
                Role::Reviewer,
                &station,
                &here,
                &Verdict::Approve("长".repeat(500))
            )
            .is_ok()
        );
    }

    fn villages(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn reviewers_decide_in_their_villages_and_a_return_says_why() {
        let station = ["A".to_owned(), "B".to_owned()];
        let here = villages(&["B"]);
        let elsewhere = villages(&["C"]);
        let approve = Verdict::Approve(" ".into());
        let plan = decide(Role::Reviewer, &station, &here, &approve).unwrap();
        assert_eq!(plan.action, "approve");
        assert_eq!(plan.fields[0].1, Value::String("approved".into()));
        assert_eq!(plan.fields[1].1, Value::Null);
        // A note on an approval is kept, as the officer's and the audit log's.
        let noted = Verdict::Approve("下次请拍清楚 ".into());
        let plan = decide(Role::Reviewer, &station, &here, &noted).unwrap();
        assert_eq!(plan.fields[1].1, Value::String("下次请拍清楚".into()));
        assert_eq!(plan.comment.as_deref(), Some("下次请拍清楚"));
        let back = Verdict::Return("  电话号码有误 ".into());
        let plan = decide(Role::Reviewer, &station, &here, &back).unwrap();
        assert_eq!(plan.fields[1].1, Value::String("电话号码有误".into()));
        assert_eq!(plan.comment.as_deref(), Some("电话号码有误"));
        assert_eq!(
            decide(
                Role::Reviewer,
                &station,
                &here,
                &Verdict::Return(" ".into())
            ),
            Err(ReviewRefused::NoComment)
        );
        assert_eq!(
            decide(Role::Reviewer, &station, &elsewhere, &approve),
            Err(ReviewRefused::NotVisible)
        );
        // Whose villages it lies in, an officer never decides; an administrator always does.
        assert_eq!(
            decide(Role::Officer, &station, &here, &approve),
            Err(ReviewRefused::NotVisible)
        );
        assert!(decide(Role::Admin, &[], &elsewhere, &approve).is_ok());
    }
}
