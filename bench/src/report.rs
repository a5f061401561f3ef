//! target/bench/summary.json, the table printed at the end, and the shape check
//! the smoke run ends with.

use crate::stats::{Summary, round};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Finite numbers only: a ratio over nothing is `null` in the summary, and the
/// check refuses it.
pub fn num(x: f64, digits: i32) -> Value {
    if x.is_finite() {
        json!(round(x, digits))
    } else {
        Value::Null
    }
}

pub fn ms(s: Option<Summary>) -> Value {
    s.map_or(Value::Null, Summary::to_json)
}

pub fn by_name(m: &BTreeMap<String, f64>, digits: i32) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), num(*v, digits)))
            .collect::<Map<_, _>>(),
    )
}

/// The targets of the benchmark issue, each with the measured value and whether it is met.
pub fn targets(s: &Value) -> Value {
    let t = |key: &str, cmp: &str, target: f64| {
        let actual = s[key].as_f64();
        let met = actual.map(|a| match cmp {
            "<=" => a <= target,
            _ => a >= target,
        });
        json!({"target": format!("{cmp} {target}"), "actual": actual, "met": met})
    };
    json!({
        "events_per_order": t("events_per_order", "<=", 60.0),
        "efficiency": t("efficiency", ">=", 0.8),
        "cpu_share_api_workers": t("cpu_share_api_workers", "<=", 0.2),
        "place_overhead_p99_ratio": t("place_overhead_p99_ratio", "<=", 1.5),
        "read_vs_query_rps_ratio": t("read_vs_query_rps_ratio", ">=", 20.0),
        "lost_orders": t("lost_orders", "<=", 0.0),
        "double_charges": t("double_charges", "<=", 0.0),
    })
}

/// The human table.
pub fn table(s: &Value) -> String {
    let mut out = String::new();
    let f = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "\nbaedal benchmark: {} orders at concurrency {}{}\ntopology: {}",
        f(&s["settings"]["orders"]),
        f(&s["settings"]["concurrency"]),
        if s["settings"]["smoke"] == true {
            " (smoke)"
        } else {
            ""
        },
        s["topology"].as_str().unwrap_or("single")
    );
    let _ = writeln!(
        out,
        "\n{:<36} {:>12}  {:<10} met",
        "figure", "value", "target"
    );
    let _ = writeln!(out, "{}", "-".repeat(66));
    let rows = [
        ("orders/s", "orders_per_s"),
        ("events per order", "events_per_order"),
        ("Temporal Cloud actions per order", "actions_per_order"),
        ("ceiling events/s (1-activity wf)", "ceiling_events_per_s"),
        ("efficiency", "efficiency"),
        ("API+workers share of CPU", "cpu_share_api_workers"),
        ("place p99 alone (ms)", "place_p99_ms"),
        (
            "bare update-with-start p99 (ms)",
            "bare_update_with_start_p99_ms",
        ),
        ("place overhead p99 ratio", "place_overhead_p99_ratio"),
        (
            "place p99 in the lifecycle mix (ms)",
            "place_under_load_p99_ms",
        ),
        ("read model req/s", "read_model_rps"),
        ("live query req/s", "query_rps"),
        ("read model / query req/s", "read_vs_query_rps_ratio"),
        ("lost orders", "lost_orders"),
        ("double charges", "double_charges"),
    ];
    for (label, key) in rows {
        let target = &s["targets"][key];
        let _ = writeln!(
            out,
            "{:<36} {:>12}  {:<10} {}",
            label,
            f(&s[key]),
            target["target"].as_str().unwrap_or(""),
            match target["met"] {
                Value::Bool(true) => "yes",
                Value::Bool(false) => "NO",
                _ => "",
            }
        );
    }
    let _ = writeln!(
        out,
        "\n{:<22} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "call (ms)", "count", "p50", "p95", "p99", "max"
    );
    let _ = writeln!(out, "{}", "-".repeat(70));
    let mut lat: Vec<(&str, &Value)> = s["latencies_ms"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default();
    lat.push(("place -> DELIVERED", &s["place_to_delivered_ms"]));
    lat.push(("bare update-with-start", &s["bare_update_with_start_ms"]));
    for (k, v) in lat {
        let _ = writeln!(
            out,
            "{:<22} {:>7} {:>9} {:>9} {:>9} {:>9}",
            k,
            f(&v["count"]),
            f(&v["p50"]),
            f(&v["p95"]),
            f(&v["p99"]),
            f(&v["max"])
        );
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:>16} {:>14}",
        "process", "CPU s per order", "peak RSS MiB"
    );
    let _ = writeln!(out, "{}", "-".repeat(46));
    if let Some(cpu) = s["cpu_s_per_order"].as_object() {
        for (k, v) in cpu {
            let _ = writeln!(
                out,
                "{:<14} {:>16} {:>14}",
                k,
                f(v),
                f(&s["peak_rss_mb"][k])
            );
        }
    }
    for (title, key) in [
        ("events per order by type (mean)", "events_by_type"),
        (
            "Temporal Cloud actions per order by kind (mean)",
            "actions_by_kind",
        ),
    ] {
        let _ = writeln!(out, "\n{title}");
        if let Some(types) = s[key].as_object() {
            let mut v: Vec<_> = types.iter().collect();
            v.sort_by(|a, b| {
                b.1.as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&a.1.as_f64().unwrap_or(0.0))
            });
            for (k, n) in v {
                let _ = writeln!(out, "  {:<44} {:>7}", k, f(n));
            }
        }
    }
    if s["scaled"].is_object() {
        out += &crate::scaled::table(&s["scaled"]);
    }
    out
}

/// What the smoke run asserts: every figure is there and has its type, and no
/// order was lost or charged twice. Never a timing.
pub fn check(s: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for key in [
        "orders_per_s",
        "events_per_order",
        "efficiency",
        "place_p99_ms",
        "place_overhead_p99_ratio",
        "read_model_rps",
        "read_vs_query_rps_ratio",
        "cpu_share_api_workers",
    ] {
        if !s[key].is_number() {
            problems.push(format!("{key} is {} (expected a number)", s[key]));
        }
    }
    for process in ["api", "workers", "temporal"] {
        if !s["cpu_s_per_order"][process].is_number() {
            problems.push(format!(
                "cpu_s_per_order.{process} is {} (expected a number)",
                s["cpu_s_per_order"][process]
            ));
        }
    }
    if !s["latencies_ms"]["place"]["p99"].is_number() {
        problems.push("latencies_ms.place.p99 is missing".into());
    }
    if s["events_by_type"].as_object().is_none_or(Map::is_empty) {
        problems.push("events_by_type is empty".into());
    }
    // Every delivered order was started and ran activities: it cost Actions.
    if !s["actions_per_order"].as_f64().is_some_and(|a| a > 0.0) {
        problems.push(format!(
            "actions_per_order is {} (expected a positive number)",
            s["actions_per_order"]
        ));
    }
    if s["actions_by_kind"].as_object().is_none_or(Map::is_empty) {
        problems.push("actions_by_kind is empty or missing".into());
    }
    match s["place_probe_problems"].as_array() {
        Some(p) if p.is_empty() => {}
        Some(p) => problems.push(format!("place probes: {}", Value::from(p.clone()))),
        None => problems.push("place_probe_problems is missing".into()),
    }
    for key in ["lost_orders", "double_charges"] {
        match s[key].as_u64() {
            Some(0) => {}
            Some(n) => problems.push(format!("{key} = {n}")),
            None => problems.push(format!("{key} is {} (expected a count)", s[key])),
        }
    }
    let (requested, delivered) = (&s["orders"]["requested"], &s["orders"]["delivered"]);
    if !requested.is_u64() || requested != delivered {
        problems.push(format!("{delivered} of {requested} orders delivered"));
    }
    match s["topology"].as_str() {
        None | Some("single") => {}
        Some("scaled") => problems.extend(crate::scaled::check(&s["scaled"])),
        Some(other) => problems.push(format!("topology is {other:?}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({
            "orders_per_s": 3.5, "events_per_order": 70.0, "efficiency": 0.5,
            "place_p99_ms": 80.0, "place_overhead_p99_ratio": 2.0,
            "read_model_rps": 9000.0, "read_vs_query_rps_ratio": 30.0,
            "cpu_share_api_workers": 0.3,
            "cpu_s_per_order": {"api": 0.01, "workers": 0.02, "temporal": 0.05},
            "latencies_ms": {"place": {"count": 4, "p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 3.0}},
            "events_by_type": {"ACTIVITY_TASK_SCHEDULED": 9.0},
            "actions_per_order": 40.0,
            "actions_by_kind": {"schedule_activity": 19.0, "start_workflow": 1.0},
            "lost_orders": 0, "double_charges": 0, "place_probe_problems": [],
            "orders": {"requested": 20, "delivered": 20},
        })
    }

    #[test]
    fn a_complete_summary_passes() {
        assert_eq!(check(&good()), Ok(()));
    }

    #[test]
    fn lost_orders_missing_figures_and_short_runs_fail() {
        let mut s = good();
        s["lost_orders"] = json!(1);
        assert!(check(&s).unwrap_err()[0].contains("lost_orders = 1"));

        let mut s = good();
        s["efficiency"] = Value::Null;
        s["cpu_s_per_order"]
            .as_object_mut()
            .unwrap()
            .remove("temporal");
        assert_eq!(check(&s).unwrap_err().len(), 2);

        let mut s = good();
        s["orders"]["delivered"] = json!(19);
        assert!(check(&s).is_err());

        let mut s = good();
        s["events_by_type"] = json!({});
        assert!(check(&s).is_err());

        let mut s = good();
        s["place_probe_problems"] = json!(["probe x: 2 charges"]);
        assert!(check(&s).is_err());
    }

    #[test]
    fn missing_or_empty_actions_fail() {
        let mut s = good();
        let m = s.as_object_mut().unwrap();
        m.remove("actions_per_order");
        m.remove("actions_by_kind");
        let problems = check(&s).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("actions_per_order"));
        assert!(problems[1].contains("actions_by_kind"));

        for bad in [json!(0.0), json!(-1.0), Value::Null, json!("40")] {
            let mut s = good();
            s["actions_per_order"] = bad;
            assert!(check(&s).unwrap_err()[0].contains("actions_per_order"));
        }

        let mut s = good();
        s["actions_by_kind"] = json!({});
        assert!(check(&s).unwrap_err()[0].contains("actions_by_kind"));
    }

    #[test]
    fn a_scaled_summary_must_show_its_proofs() {
        let mut s = good();
        s["topology"] = json!("scaled");
        assert!(check(&s).unwrap_err()[0].contains("scaled.proofs is missing"));
        let kills: Vec<Value> = crate::scaled::victims()
            .iter()
            .map(|n| json!({"name": n, "ok": true}))
            .collect();
        s["scaled"] = json!({
            "proofs": [{"claim": "both APIs served orders before the kill", "ok": true, "detail": ""}],
            "breaches": 0,
            "kill": {"killed": kills},
        });
        assert_eq!(check(&s), Ok(()));
        s["scaled"]["proofs"][0]["ok"] = json!(false);
        assert!(check(&s).unwrap_err()[0].contains("both APIs"));
        assert!(table(&s).contains("topology: scaled"));
    }

    #[test]
    fn the_table_shows_actions() {
        let t = table(&good());
        assert!(t.contains("Temporal Cloud actions per order"));
        assert!(t.contains("schedule_activity"));
    }

    #[test]
    fn targets_compare_in_the_right_direction() {
        let t = targets(&good());
        assert_eq!(t["efficiency"]["met"], false);
        assert_eq!(t["read_vs_query_rps_ratio"]["met"], true);
        assert_eq!(t["events_per_order"]["met"], false);
        assert_eq!(t["lost_orders"]["met"], true);
    }
}
