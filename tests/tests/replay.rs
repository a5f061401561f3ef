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
            // Recordings since the payload codec are sealed with the recording
            // key; older ones are not, and pass through the codec as they are.
            .data_converter(
                baedal_worker::sealing_converter(baedal_tests::RECORDING_PAYLOAD_KEY).unwrap(),
            )
            .build(),
    )
    .unwrap()
}

/// Recordings of today's code sit in tests/histories/; those of orders started
/// before the `order-change-feed` patch in before_change_feed/, and before the
/// `serial-actions-operator-cancel` patch in before_serial_actions/.
/// Names are relative to tests/histories/.
fn recorded() -> Vec<(String, Vec<u8>)> {
    let root = format!("{}/histories", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for sub in ["", "before_change_feed/", "before_serial_actions/"] {
        for entry in std::fs::read_dir(format!("{root}/{sub}")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                let name = format!("{sub}{}", p.file_name().unwrap().to_string_lossy());
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn every_recorded_history_replays_against_todays_workflow() {
    let histories = recorded();
    let names: Vec<_> = histories.iter().map(|(n, _)| n.as_str()).collect();
    let paths = [
        "happy_path.json",
        "cancelled.json",
        "rejected.json",
        "shop_timeout.json",
        "no_rider.json",
    ];
    let oldest = paths.map(|p| format!("before_serial_actions/{p}"));
    let serial: Vec<String> = paths
        .into_iter()
        .chain([
            "operator_cancelled.json",
            "race_cancel_accept.json",
            "race_offer_accept.json",
        ])
        .map(String::from)
        .collect();
    let before_feed = serial.iter().map(|p| format!("before_change_feed/{p}"));
    // A rider's decline and an offer's lapse, recorded by the code before they
    // shared one `end_offer` step (8f770d9): that step must replay them.
    let offer_ends = ["race_offer_decline.json", "offer_lapsed.json"].map(String::from);
    for path in oldest
        .into_iter()
        .chain(before_feed)
        .chain(serial.iter().cloned())
        .chain(offer_ends)
    {
        assert!(
            names.contains(&path.as_str()),
            "missing recorded history {path}"
        );
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
/// The patch guard can fail too: today's recording whose patch marker names
/// another patch is an old order's history that the code would not have produced.
#[tokio::test]
async fn a_recording_without_its_patch_marker_fails_replay() {
    for (name, patch) in [
        ("happy_path.json", "order-change-feed"),
        (
            "before_change_feed/happy_path.json",
            "serial-actions-operator-cancel",
        ),
    ] {
        swapped_patch_marker_fails(name, patch).await;
    }
}

async fn swapped_patch_marker_fails(name: &str, patch: &str) {
    let (_, bytes) = recorded().into_iter().find(|(n, _)| n == name).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    // The marker's data is the JSON {"id":"<patch>","deprecated":false}, base64-encoded.
    let ours = format!(r#"{{"id":"{patch}","deprecated":false}}"#);
    let other = r#"{"id":"some-other-change-entirely","deprecated":false}"#;
    let (ours, other) = (base64(ours.as_bytes()), base64(other.as_bytes()));
    assert!(text.contains(&ours), "{name} carries the {patch} marker");
    let h = WorkflowHistory::from_json(text.replace(&ours, &other).as_bytes()).unwrap();
    assert!(
        replayer().replay_workflow(h).await.is_err(),
        "{name} replays with another patch's marker"
    );
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_history_the_code_would_not_produce_fails_replay() {
    let (_, bytes) = recorded()
        .into_iter()
        .find(|(n, _)| n == "before_serial_actions/happy_path.json")
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("payment.charge"));
    let tampered = text.replacen("payment.charge", "payment.charge_twice", 1);
    let h = WorkflowHistory::from_json(tampered.as_bytes()).unwrap();
    assert!(replayer().replay_workflow(h).await.is_err());
}
