//! The refusal table is written twice, in the code (`exchange::refusals`,
//! what closes do) and in ARCHITECTURE.md (what people read); this keeps
//! the two the same, code by code.

use std::collections::BTreeMap;

use script_manager::exchange::refusals::{CLOSE_REFUSALS, CloseStep};

/// code → step name, from ARCHITECTURE.md's `| code | step | meaning |` table.
fn documented() -> BTreeMap<i64, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md")).unwrap();
    let mut rows = doc
        .lines()
        .skip_while(|l| l.replace(' ', "") != "|code|step|meaning|")
        .skip(2);
    let mut table = BTreeMap::new();
    for row in rows.by_ref().take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let code: i64 = cells[0].parse().unwrap_or_else(|_| panic!("`{row}`: not a code"));
        assert!(table.insert(code, cells[1].to_string()).is_none(), "{code} twice");
    }
    assert!(
        !table.is_empty(),
        "ARCHITECTURE.md has no `| code | step | meaning |` table"
    );
    table
}

#[test]
fn the_documented_refusal_table_is_the_one_closes_use() {
    let code: BTreeMap<i64, String> = CLOSE_REFUSALS
        .iter()
        .map(|(c, step, _)| (*c, step.as_str().to_string()))
        .collect();
    assert_eq!(documented(), code);
    let names: Vec<&str> = CloseStep::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, script_manager::telemetry::protection::CLOSE_STEPS);
}
