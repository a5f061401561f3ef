//! `GET /metrics` on the gateway and on a worker's `METRICS_ADDR`: both answer
//! Prometheus text that a Prometheus parser reads line for line, and both count
//! a placed order (the request, the payment activity, the change feed).

use baedal_tests::{Stack, StackOptions, free_port, spawn_stack_with};
use baedal_workflows::Context;
use prometheus_parse::{Sample, Scrape, Value};

/// Fetches and parses a metrics page; every sample line must be understood.
async fn scrape(s: &Stack, url: &str) -> Vec<Sample> {
    let r = s.http.get(url).send().await.expect("metrics answered");
    assert_eq!(r.status(), 200, "{url}");
    let kind = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("text/plain"), "{url}: {kind}");
    let text = r.text().await.unwrap();
    let lines: Vec<_> = text.lines().map(|l| Ok(l.to_string())).collect();
    let parsed = Scrape::parse(lines.into_iter()).expect("Prometheus text");
    // The parser skips what it does not understand: check each line, too.
    for line in text.lines() {
        assert!(
            exposition_line(line),
            "{url}: not Prometheus text: {line:?}"
        );
    }
    parsed.samples
}

/// One line of the text exposition format: a `# HELP`/`# TYPE` comment, or
/// `name{label="value",…} value [timestamp]`.
fn exposition_line(line: &str) -> bool {
    if let Some(rest) = line.strip_prefix("# TYPE ") {
        let mut parts = rest.split(' ');
        return parts.next().is_some_and(metric_name)
            && matches!(
                parts.next(),
                Some("counter" | "gauge" | "histogram" | "summary" | "untyped")
            )
            && parts.next().is_none();
    }
    if line.starts_with("# HELP ") || line.is_empty() {
        return true;
    }
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    if !metric_name(&line[..name_end]) {
        return false;
    }
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        let Some(end) = labels_end(labels) else {
            return false;
        };
        rest = &labels[end + 1..];
    }
    let mut fields = rest.strip_prefix(' ').unwrap_or("").split(' ');
    let value = fields.next().unwrap_or("");
    let number = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
    let timestamp = fields.next().is_none_or(|t| t.parse::<i64>().is_ok());
    number && timestamp && fields.next().is_none()
}

fn metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Where `a="x",b="y"}` closes, if every label is well formed.
fn labels_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'}') {
            return Some(i);
        }
        let eq = s[i..].find('=')? + i;
        if !metric_name(&s[i..eq]) || bytes.get(eq + 1) != Some(&b'"') {
            return None;
        }
        i = eq + 2;
        while bytes.get(i)? != &b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        i += 1;
        match bytes.get(i)? {
            b',' => i += 1,
            b'}' => return Some(i),
            _ => return None,
        }
    }
}

/// The value of the sample `name` whose labels include `labels` (0 if none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn the_gateway_and_a_worker_serve_prometheus_text_that_counts_a_placed_order() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let s = spawn_stack_with(StackOptions {
        contexts: vec![],
        env: vec![("METRICS_ADDR", metrics_addr.clone())],
        ..StackOptions::default()
    })
    .await;
    // One worker host for every context, as `baedal-worker` runs by default.
    s.start_workers(&Context::ALL, "all");
    let api = s.url("/metrics");
    let worker = format!("http://{metrics_addr}/metrics");
    let placed = [
        ("route", "/api/orders"),
        ("method", "POST"),
        ("status", "201"),
    ];
    let before = scrape(&s, &api).await;
    assert_eq!(value(&before, "baedal_http_requests_total", &placed), 0.0);

    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    // A path no route knows is counted under one label, whatever it is.
    let (code, _) = s.get("/api/no-such-thing-4242", &customer).await;
    assert_eq!(code, 404);

    let after = scrape(&s, &api).await;
    assert_eq!(value(&after, "baedal_http_requests_total", &placed), 1.0);
    assert_eq!(
        value(
            &after,
            "baedal_http_request_duration_seconds",
            &[("route", "/api/orders")]
        ),
        1.0,
        "one placing timed"
    );
    assert!(
        value(
            &after,
            "baedal_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) >= 1.0
    );
    assert!(
        !after
            .iter()
            .any(|s| s.labels.values().any(|v| v.contains("no-such-thing"))),
        "a probed path must not become a label"
    );
    assert_eq!(value(&after, "baedal_breaker_state", &[]), 0.0, "closed");
    assert_eq!(value(&after, "baedal_event_streams_open", &[]), 0.0);

    let w = scrape(&s, &worker).await;
    assert!(
        value(
            &w,
            "baedal_activity_total",
            &[("context", "payment"), ("outcome", "completed")]
        ) >= 1.0,
        "the charge is counted"
    );
    assert!(
        value(
            &w,
            "baedal_activity_total",
            &[
                ("context", "order"),
                ("activity", "order.record"),
                ("outcome", "completed")
            ]
        ) >= 1.0,
        "the order's local activity is counted"
    );
    assert!(
        value(
            &w,
            "baedal_feed_changes_total",
            &[("consumer", "shop"), ("outcome", "applied")]
        ) >= 1.0,
        "the owner's view came from the change feed"
    );
    // The Temporal SDK's own worker metrics are on the same page.
    assert!(
        w.iter().any(|s| s.metric.starts_with("temporal_")),
        "no temporal_ metrics"
    );
}

#[test]
fn the_line_check_refuses_what_prometheus_would_not_read() {
    for good in [
        "# HELP x_total Things",
        "# TYPE x_total counter",
        "x_total 3",
        r#"x_total{a="1",b="q\"uote"} 4.5 1700000000000"#,
        r#"h_bucket{le="+Inf"} 7"#,
        "g NaN",
    ] {
        assert!(exposition_line(good), "{good}");
    }
    for bad in [
        "# TYPE x_total countr",
        "x_total",
        "x_total three",
        r#"x_total{a=1} 3"#,
        r#"x_total{a="1" 3"#,
        "1x 3",
        "x_total 3 soon",
        "<html>",
    ] {
        assert!(!exposition_line(bad), "{bad}");
    }
}
