//! Temporal Cloud billable Actions of one workflow, counted from its history.
//!
//! Counted by Temporal Cloud's published definition of an Action,
//! <https://docs.temporal.io/evaluate/cloud/actions> ("Temporal Cloud Actions",
//! its tables of Action types and the History Event type each maps to). The
//! kinds are that page's metric names:
//!
//! | kind | per | history |
//! |---|---|---|
//! | `start_workflow` | 1 | `WORKFLOW_EXECUTION_STARTED` (for update-with-start, the start; the update counts on its own) |
//! | `schedule_activity` | 1 | `ACTIVITY_TASK_SCHEDULED` |
//! | `retry_activity` | attempt − 1 | `ACTIVITY_TASK_STARTED` (its `attempt` is the last attempt's) |
//! | `record_activity_markers` | 1 per workflow task | `MARKER_RECORDED`s of one workflow task, one of them a local activity's: all local activities of a workflow task are one Action |
//! | `record_patch_markers` | 1 per workflow task | the same for a workflow task whose markers are none a local activity's (here the `core_patch` marker of `ctx.patched`): Cloud counts *all* RecordMarkers of a workflow task as one Action, whatever the marker |
//! | `retry_activity_local` | n | `WORKFLOW_TASK_COMPLETED`'s `metering_metadata.nonfirst_local_activity_execution_attempts` |
//! | `start_timer` | 1 | `TIMER_STARTED` |
//! | `signal_workflow` | 1 | `WORKFLOW_EXECUTION_SIGNALED`, except the one right after `WORKFLOW_EXECUTION_STARTED` (signal-with-start is one Action in all) |
//! | `accept_workflow_update` | 1 | `WORKFLOW_EXECUTION_UPDATE_ACCEPTED` |
//! | `upsert_workflow_search_attributes` | 1 | `UPSERT_WORKFLOW_SEARCH_ATTRIBUTES`, unless it sets only `TemporalChangeVersion` (exempt) |
//! | `start_child_workflow` | 2 | `START_CHILD_WORKFLOW_EXECUTION_INITIATED` |
//! | `update_workflow_options` | 1 | `WORKFLOW_EXECUTION_OPTIONS_UPDATED` |
//! | `schedule_nexus_operation` | 1 | `NEXUS_OPERATION_SCHEDULED` |
//! | `request_nexus_operation_cancellation` | 1 | `NEXUS_OPERATION_CANCEL_REQUESTED` |
//!
//! Not in a history, so not counted: Queries (one Action per query a worker
//! answers; the lifecycle run queries no order), Activity Heartbeats that reach
//! the server (no activity of this product heartbeats), Workflow Task
//! Heartbeats of long local activities, rejected Updates (never written to
//! history), Schedules, Export. Counted elsewhere, not here: Continue-As-New
//! (the new run's start), a Signal sent to another workflow (the signaled
//! workflow's history), a reset (not used).
//!
//! The page calls counts from a history estimates: billing data is the
//! authority.

use std::collections::BTreeMap;
use temporalio_common::protos::constants::LOCAL_ACTIVITY_MARKER_NAME;
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

/// What the benchmark keeps of one history event: its type, and what the
/// Action count needs from its attributes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub event_id: i64,
    /// `EventType` without its `EVENT_TYPE_` prefix, e.g. `MARKER_RECORDED`.
    pub event_type: String,
    /// `MARKER_RECORDED`: the marker's name (`core_local_activity`, `core_patch`, ...).
    pub marker_name: String,
    /// `MARKER_RECORDED`: the `WORKFLOW_TASK_COMPLETED` event whose commands recorded it.
    pub workflow_task_completed_event_id: i64,
    /// `ACTIVITY_TASK_STARTED`: the attempt that ended the activity (1: no retry).
    pub attempt: i32,
    /// `UPSERT_WORKFLOW_SEARCH_ATTRIBUTES`: the search attributes it sets.
    pub search_attributes: Vec<String>,
    /// `WORKFLOW_TASK_COMPLETED`: local activity attempts after the first.
    pub local_activity_retries: u32,
    /// When the server wrote it, in milliseconds since the epoch.
    pub at_ms: i64,
    /// `WORKFLOW_TASK_STARTED`, `ACTIVITY_TASK_STARTED`: the worker that took the task.
    pub identity: String,
    /// `ACTIVITY_TASK_STARTED`: its `ACTIVITY_TASK_SCHEDULED` event.
    pub scheduled_event_id: i64,
    /// `ACTIVITY_TASK_SCHEDULED`, `WORKFLOW_EXECUTION_STARTED`: the task queue.
    pub task_queue: String,
}

/// An event type's name as the summary spells it: `EVENT_TYPE_` dropped.
pub fn type_name(code: i32) -> String {
    EventType::try_from(code)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("EVENT_TYPE_")
                .to_string()
        })
        .unwrap_or_else(|_| format!("UNKNOWN_{code}"))
}

impl From<&HistoryEvent> for Event {
    fn from(e: &HistoryEvent) -> Self {
        let mut out = Event {
            event_id: e.event_id,
            event_type: type_name(e.event_type),
            at_ms: e
                .event_time
                .as_ref()
                .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
            ..Event::default()
        };
        match &e.attributes {
            Some(Attributes::MarkerRecordedEventAttributes(a)) => {
                out.marker_name = a.marker_name.clone();
                out.workflow_task_completed_event_id = a.workflow_task_completed_event_id;
            }
            Some(Attributes::ActivityTaskStartedEventAttributes(a)) => {
                out.attempt = a.attempt;
                out.identity = a.identity.clone();
                out.scheduled_event_id = a.scheduled_event_id;
            }
            Some(Attributes::WorkflowTaskStartedEventAttributes(a)) => {
                out.identity = a.identity.clone();
            }
            Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => {
                out.task_queue = a
                    .task_queue
                    .as_ref()
                    .map_or(String::new(), |q| q.name.clone());
            }
            Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
                out.task_queue = a
                    .task_queue
                    .as_ref()
                    .map_or(String::new(), |q| q.name.clone());
            }
            Some(Attributes::UpsertWorkflowSearchAttributesEventAttributes(a)) => {
                out.search_attributes = a
                    .search_attributes
                    .iter()
                    .flat_map(|s| s.indexed_fields.keys().cloned())
                    .collect();
                out.search_attributes.sort();
            }
            Some(Attributes::WorkflowTaskCompletedEventAttributes(a)) => {
                out.local_activity_retries = a
                    .metering_metadata
                    .as_ref()
                    .map_or(0, |m| m.nonfirst_local_activity_execution_attempts);
            }
            _ => {}
        }
        out
    }
}

/// The marker of a local activity: the Rust/TypeScript/Python/.NET SDKs' core
/// name, or the Go and Java SDKs'.
fn is_local_activity(marker_name: &str) -> bool {
    marker_name == LOCAL_ACTIVITY_MARKER_NAME || marker_name == "LocalActivity"
}

/// Temporal Cloud billable Actions in one workflow's history, by kind (only
/// kinds that occur). See the module's table for the mapping.
pub fn billable_actions(events: &[Event]) -> BTreeMap<&'static str, u64> {
    let mut n: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut add = |kind: &'static str, count: u64| {
        if count > 0 {
            *n.entry(kind).or_default() += count;
        }
    };
    // Workflow task (its WORKFLOW_TASK_COMPLETED event id) -> whether one of
    // its markers is a local activity's.
    let mut marker_tasks: BTreeMap<i64, bool> = BTreeMap::new();
    let mut last_completed_task = 0;
    let mut previous = "";
    for e in events {
        match e.event_type.as_str() {
            "WORKFLOW_EXECUTION_STARTED" => add("start_workflow", 1),
            "ACTIVITY_TASK_SCHEDULED" => add("schedule_activity", 1),
            "ACTIVITY_TASK_STARTED" => add("retry_activity", e.attempt.max(1) as u64 - 1),
            "WORKFLOW_TASK_COMPLETED" => {
                last_completed_task = e.event_id;
                add("retry_activity_local", u64::from(e.local_activity_retries));
            }
            "MARKER_RECORDED" => {
                // A marker names the task that recorded it; should it not, it
                // follows that task's WORKFLOW_TASK_COMPLETED.
                let task = if e.workflow_task_completed_event_id > 0 {
                    e.workflow_task_completed_event_id
                } else {
                    last_completed_task
                };
                *marker_tasks.entry(task).or_default() |= is_local_activity(&e.marker_name);
            }
            "TIMER_STARTED" => add("start_timer", 1),
            "WORKFLOW_EXECUTION_SIGNALED" if previous != "WORKFLOW_EXECUTION_STARTED" => {
                add("signal_workflow", 1)
            }
            "WORKFLOW_EXECUTION_UPDATE_ACCEPTED" => add("accept_workflow_update", 1),
            "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"
                if e.search_attributes != ["TemporalChangeVersion"] =>
            {
                add("upsert_workflow_search_attributes", 1)
            }
            "START_CHILD_WORKFLOW_EXECUTION_INITIATED" => add("start_child_workflow", 2),
            "WORKFLOW_EXECUTION_OPTIONS_UPDATED" => add("update_workflow_options", 1),
            "NEXUS_OPERATION_SCHEDULED" => add("schedule_nexus_operation", 1),
            "NEXUS_OPERATION_CANCEL_REQUESTED" => add("request_nexus_operation_cancellation", 1),
            _ => {}
        }
        previous = e.event_type.as_str();
    }
    for local_activity in marker_tasks.into_values() {
        if local_activity {
            add("record_activity_markers", 1);
        } else {
            add("record_patch_markers", 1);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ev(id: i64, t: &str) -> Event {
        Event {
            event_id: id,
            event_type: t.to_string(),
            ..Event::default()
        }
    }

    fn marker(id: i64, name: &str, task: i64) -> Event {
        Event {
            marker_name: name.to_string(),
            workflow_task_completed_event_id: task,
            ..ev(id, "MARKER_RECORDED")
        }
    }

    #[test]
    fn markers_of_one_workflow_task_are_one_action() {
        let upsert = |id, names: &[&str]| Event {
            search_attributes: names.iter().map(|s| s.to_string()).collect(),
            ..ev(id, "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES")
        };
        let events = vec![
            ev(1, "WORKFLOW_EXECUTION_STARTED"),
            ev(2, "WORKFLOW_TASK_SCHEDULED"),
            ev(3, "WORKFLOW_TASK_STARTED"),
            ev(4, "WORKFLOW_TASK_COMPLETED"),
            ev(5, "WORKFLOW_EXECUTION_UPDATE_ACCEPTED"),
            marker(6, "core_patch", 4),
            upsert(7, &["TemporalChangeVersion"]),
            upsert(8, &["OrderStatus", "ShopId"]),
            ev(9, "ACTIVITY_TASK_SCHEDULED"),
            // Two local activities and a patch in the same task: one Action.
            marker(10, "core_local_activity", 4),
            marker(11, "core_local_activity", 4),
            Event {
                attempt: 3,
                ..ev(12, "ACTIVITY_TASK_STARTED")
            },
            ev(13, "ACTIVITY_TASK_COMPLETED"),
            ev(14, "WORKFLOW_TASK_SCHEDULED"),
            ev(15, "WORKFLOW_TASK_STARTED"),
            Event {
                local_activity_retries: 2,
                ..ev(16, "WORKFLOW_TASK_COMPLETED")
            },
            // A marker without its task's id belongs to the task before it.
            marker(17, "core_local_activity", 0),
            ev(18, "TIMER_STARTED"),
            ev(19, "WORKFLOW_EXECUTION_UPDATE_COMPLETED"),
            ev(20, "WORKFLOW_TASK_SCHEDULED"),
            ev(21, "WORKFLOW_TASK_STARTED"),
            ev(22, "WORKFLOW_TASK_COMPLETED"),
            // A patch alone in its task is a batch of markers too.
            marker(23, "core_patch", 22),
            ev(24, "WORKFLOW_EXECUTION_SIGNALED"),
            ev(25, "START_CHILD_WORKFLOW_EXECUTION_INITIATED"),
            ev(26, "WORKFLOW_EXECUTION_COMPLETED"),
        ];
        let want: BTreeMap<&str, u64> = [
            ("start_workflow", 1),
            ("accept_workflow_update", 1),
            ("upsert_workflow_search_attributes", 1),
            ("schedule_activity", 1),
            ("retry_activity", 2),
            ("record_activity_markers", 2),
            ("record_patch_markers", 1),
            ("retry_activity_local", 2),
            ("start_timer", 1),
            ("signal_workflow", 1),
            ("start_child_workflow", 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(billable_actions(&events), want);
    }

    #[test]
    fn signal_with_start_is_one_action() {
        let events = [
            ev(1, "WORKFLOW_EXECUTION_STARTED"),
            ev(2, "WORKFLOW_EXECUTION_SIGNALED"),
            ev(3, "WORKFLOW_TASK_SCHEDULED"),
        ];
        let got = billable_actions(&events);
        assert_eq!(got.values().sum::<u64>(), 1);
        assert_eq!(got["start_workflow"], 1);
    }

    /// A history as `make record-histories` writes it (`tests/histories`): the
    /// event type a number, the attributes under their message's name.
    fn recorded(path: &str) -> Vec<Event> {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let doc: Value = serde_json::from_str(&text).unwrap();
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let attrs = e["attributes"]
                    .as_object()
                    .and_then(|m| m.values().next())
                    .cloned()
                    .unwrap_or(Value::Null);
                Event {
                    event_id: e["event_id"].as_i64().unwrap(),
                    event_type: type_name(e["event_type"].as_i64().unwrap() as i32),
                    marker_name: attrs["marker_name"].as_str().unwrap_or("").to_string(),
                    workflow_task_completed_event_id: attrs["workflow_task_completed_event_id"]
                        .as_i64()
                        .unwrap_or(0),
                    attempt: attrs["attempt"].as_i64().unwrap_or(0) as i32,
                    search_attributes: attrs["search_attributes"]["indexedFields"]
                        .as_object()
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default(),
                    local_activity_retries:
                        attrs["metering_metadata"]["nonfirst_local_activity_execution_attempts"]
                            .as_u64()
                            .unwrap_or(0) as u32,
                    ..Event::default()
                }
            })
            .collect()
    }

    /// Counted by hand from the happy path recorded before the
    /// `order-change-feed` patch (142 events): the start (update-with-start), 19
    /// activities, all first attempts, 6 workflow tasks with a local activity's
    /// marker (the customer's read model), the first task's `core_patch`
    /// marker, 3 timers, 6 accepted updates, 7 upserts of which the first sets
    /// only TemporalChangeVersion (exempt). That recording moves to
    /// `before_change_feed/` when fresh ones take its place.
    #[test]
    fn the_recorded_happy_path_costs_42_actions() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/histories");
        let path = ["before_change_feed/happy_path.json", "happy_path.json"]
            .map(|f| format!("{dir}/{f}"))
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("tests/histories/happy_path.json");
        let events = recorded(&path);
        assert_eq!(events.len(), 142);
        let want: BTreeMap<&str, u64> = [
            ("start_workflow", 1),
            ("schedule_activity", 19),
            ("record_activity_markers", 6),
            ("record_patch_markers", 1),
            ("start_timer", 3),
            ("accept_workflow_update", 6),
            ("upsert_workflow_search_attributes", 6),
        ]
        .into_iter()
        .collect();
        let got = billable_actions(&events);
        assert_eq!(got, want);
        assert_eq!(got.values().sum::<u64>(), 42);
    }
}
