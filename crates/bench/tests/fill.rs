//! `muster-bench fill` writes what the services would have written: every incident has its
//! intake record, escalation grading and command record, and dispatch assignment, in the
//! services' own formats (they decode with the services' own types); the handled ones and the
//! copies alike; the newest `--open` stay open and the rest are closed.

use std::process::Command;

use store::Store;

#[test]
fn fill_writes_every_incident_in_all_three_stores() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .args(["fill", "--count", "14", "--open", "3", "--templates", "4"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fill failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("fill.json")).unwrap()).unwrap();
    assert_eq!(report["incidents"], 14);
    assert_eq!(report["closed"], 11);
    // 14 - 3 open - 4 templates.
    assert_eq!(report["replicated"], 7);
    assert!(
        report["units_booked"].as_u64().unwrap() > 0,
        "no unit booked"
    );

    let intake = Store::open(dir.path().join("intake")).unwrap();
    let records: Vec<(String, intake::IncidentRecord)> =
        intake.scan_prefix("incident/live/").unwrap();
    assert_eq!(records.len(), 14);
    let open: Vec<&str> = records
        .iter()
        .filter(|(_, record)| record.status != intake::IncidentStatus::Closed)
        .map(|(_, record)| record.id.as_str())
        .collect();
    assert_eq!(open.len(), 3, "the newest three stay open: {open:?}");
    for (_, record) in &records {
        assert!(record.grading.is_some(), "{} was never graded", record.id);
        assert!(
            record.units.is_some(),
            "{} has no units_assigned",
            record.id
        );
    }
    assert_eq!(
        intake.outbox_len(),
        0,
        "fill must leave no events to publish"
    );
    drop(intake);

    let escalation = Store::open(dir.path().join("escalation")).unwrap();
    let dispatch = Store::open(dir.path().join("dispatch")).unwrap();
    for (_, record) in &records {
        let id = &record.id;
        assert!(
            escalation
                .get::<escalation::GradingRecord>(&format!("grading/live/{id}"))
                .unwrap()
                .is_some(),
            "no grading for {id}"
        );
        assert!(
            escalation
                .get::<escalation::command::CommandRecord>(&format!("command/live/{id}"))
                .unwrap()
                .is_some(),
            "no command record for {id}"
        );
        assert!(
            dispatch
                .get::<dispatch::AssignmentRecord>(&dispatch::assignment_key("live", id))
                .unwrap()
                .is_some(),
            "no assignment for {id}"
        );
    }
}
