//! Replays histories recorded from real runs (tests/histories/) against today's
//! workflow code: any nondeterministic change fails here before it can break a
//! running order. Re-record with `make record-histories` (see the README there).

use baedal_workflows::OrderFulfillment;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn replayer() -> WorkflowReplayer {
    WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<OrderFulfillment>()
            .unwrap()
            .build(),
    )
    .unwrap()
}

fn recorded() -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/histories", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn every_recorded_history_replays_against_todays_workflow() {
    let histories = recorded();
    let names: Vec<_> = histories.iter().map(|(n, _)| n.as_str()).collect();
    for path in [
        "happy_path.json",
        "cancelled.json",
        "rejected.json",
        "shop_timeout.json",
        "no_rider.json",
    ] {
        assert!(names.contains(&path), "missing recorded history {path}");
    }
    let r = replayer();
    for (name, bytes) in histories {
        let h = WorkflowHistory::from_json(&bytes).unwrap();
        r.replay_workflow(h)
            .await
            .unwrap_or_else(|e| panic!("{name} no longer replays: {e}"));
    }
}

/// The guard can fail: a history whose first activity was a different one does
/// not match the code's decisions.
#[tokio::test]
async fn a_history_the_code_would_not_produce_fails_replay() {
    let (_, bytes) = recorded()
        .into_iter()
        .find(|(n, _)| n == "happy_path.json")
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("payment.charge"));
    let tampered = text.replacen("payment.charge", "payment.charge_twice", 1);
    let h = WorkflowHistory::from_json(tampered.as_bytes()).unwrap();
    assert!(replayer().replay_workflow(h).await.is_err());
}
