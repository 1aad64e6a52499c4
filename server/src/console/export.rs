//! Exports of a filtered list to CSV (UTF-8 with a byte-order mark, so Excel reads Chinese) and
//! XLSX. Exports carry full ID numbers and phones for the station's own systems, so every export is
//! audited with its filter and row count.

use rust_xlsxwriter::Workbook;

use crate::error::AppError;
use crate::store::records::Row;

/// Column headings, in order.
const HEADINGS: [&str; 13] = [
    "记录编号",
    "类型",
    "村（社区）代码",
    "村（社区）",
    "摘要",
    "证件号码",
    "姓名",
    "车牌",
    "地址",
    "电话",
    "审核状态",
    "采集人",
    "采集时间",
];

fn cells(row: &Row, village_name: &dyn Fn(&str) -> String) -> [String; 13] {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let kind = baylink_domain::EntityKind::parse(&row.kind)
        .map_or(row.kind.clone(), |k| k.label_zh().to_owned());
    let status = row.review_status.as_deref().unwrap_or("pending");
    let status = baylink_domain::schema::REVIEW_STATUSES
        .iter()
        .find(|c| c.code == status)
        .map_or(status, |c| c.zh);
    [
        row.id.clone(),
        kind,
        text(&row.village),
        row.village.as_deref().map(village_name).unwrap_or_default(),
        row.label.clone(),
        text(&row.id_number),
        text(&row.name),
        text(&row.plate),
        text(&row.address),
        text(&row.phone),
        status.to_owned(),
        text(&row.created_by),
        text(&row.created_at),
    ]
}

/// A CSV field: quoted when it holds a comma, quote or line break, quotes doubled; one that a
/// spreadsheet would take for a formula (= + - @) is prefixed with a quote mark.
pub fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The rows as CSV.
pub(super) fn csv(rows: &[Row], village_name: &dyn Fn(&str) -> String) -> Vec<u8> {
    let mut out = String::from("\u{FEFF}");
    out.push_str(&HEADINGS.join(","));
    out.push_str("\r\n");
    for row in rows {
        let line: Vec<String> = cells(row, village_name)
            .iter()
            .map(|c| csv_field(c))
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// The rows as an XLSX workbook.
pub(super) fn xlsx(
    rows: &[Row],
    village_name: &dyn Fn(&str) -> String,
) -> Result<Vec<u8>, AppError> {
    let bad = |e: rust_xlsxwriter::XlsxError| AppError::Internal(format!("xlsx: {e}"));
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name("记录").map_err(bad)?;
    for (col, heading) in HEADINGS.iter().enumerate() {
        sheet.write_string(0, col as u16, *heading).map_err(bad)?;
    }
    for (i, row) in rows.iter().enumerate() {
        for (col, cell) in cells(row, village_name).iter().enumerate() {
            // Strings always: an ID number must never become a number in scientific notation.
            sheet
                .write_string(i as u32 + 1, col as u16, cell)
                .map_err(bad)?;
        }
    }
    workbook.save_to_buffer().map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting_and_defuses_formulas() {
        assert_eq!(csv_field("王芳"), "王芳");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }
}
