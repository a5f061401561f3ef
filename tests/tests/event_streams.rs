//! Event streams on the open internet: capped per user and in all, ended at
//! the order's final status whatever `Last-Event-ID` says (a huge id does not
//! wrap round and replay everything), and ended after their lifetime. A browser
//! opens one with a short-lived ticket for that stream only, never with its
//! login token in the URL.

use baedal_tests::*;
use serde_json::json;

async fn a_user_holds_at_most_so_many_streams_and_a_closed_one_frees_its_place(postgres: bool) {
    let s = spawn_stack_with(on_store(
        postgres,
        with_env(&[("SSE_STREAMS_PER_USER", "2")]),
    ))
    .await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let path = format!("/api/orders/{id}/events");
    let first = follow(&s, &path, &customer).await;
    let _second = follow(&s, &path, &customer).await;
    let r = s
        .http
        .get(s.url(&path))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Another user is not held up by this one's streams.
    let other = s.login("customer2").await;
    let theirs = s.place(&other).await;
    let _theirs = follow(&s, &format!("/api/orders/{theirs}/events"), &other).await;
    // The client goes away: its place is free again once the server notices.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match follow_from(&s, &path, &customer, None).await {
            Ok(_) => break,
            Err(code) => assert_eq!(code, 429),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn a_resumed_stream_ends_at_the_final_status_whatever_id_it_resumed_from(postgres: bool) {
    let s = spawn_stack_with(on_store(postgres, StackOptions::default())).await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let path = format!("/api/orders/{id}/events");
    // Past the history, and the largest id there is (which once wrapped to 0).
    let mut past = follow_from(&s, &path, &customer, Some("99")).await.unwrap();
    let mut huge = follow_from(&s, &path, &customer, Some("18446744073709551615"))
        .await
        .unwrap();
    let mut junk = follow_from(&s, &path, &customer, Some("-1")).await.unwrap();
    let (code, _) = s
        .post(&format!("/api/orders/{id}/cancel"), &customer, json!({}))
        .await;
    assert_eq!(code, 200);
    for stream in [&mut past, &mut huge] {
        let ev = next_event(stream)
            .await
            .expect("the change after the resume point");
        assert_eq!(ev["status"], "CANCELLED", "nothing replayed: {ev}");
        assert_eq!(next_event(stream).await, None, "the stream ends");
    }
    // An id that is no number resumes from the start.
    assert_eq!(next_event(&mut junk).await.unwrap()["status"], "PAID");
    assert_eq!(next_event(&mut junk).await.unwrap()["status"], "CANCELLED");
    assert_eq!(next_event(&mut junk).await, None);
    // Once the order is final, resuming past its end is 204 (stop reconnecting).
    for id_past in ["1", "99", "18446744073709551615"] {
        let err = follow_from(&s, &path, &customer, Some(id_past)).await.err();
        assert_eq!(err, Some(204), "Last-Event-ID {id_past}");
    }
}

async fn a_stream_ends_after_its_lifetime_and_resumes_where_it_ended(postgres: bool) {
    let s = spawn_stack_with(on_store(postgres, with_env(&[("SSE_MAX_LIFETIME", "1s")]))).await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let path = format!("/api/orders/{id}/events");
    let mut events = follow(&s, &path, &customer).await;
    assert_eq!(next_event(&mut events).await.unwrap()["status"], "PAID");
    assert_eq!(next_event(&mut events).await, None, "ended by its lifetime");
    // The order goes on; resuming after event 0 carries on from there.
    let (code, _) = s
        .post(&format!("/api/orders/{id}/cancel"), &customer, json!({}))
        .await;
    assert_eq!(code, 200);
    let mut resumed = follow_from(&s, &path, &customer, Some("0")).await.unwrap();
    assert_eq!(
        next_event(&mut resumed).await.unwrap()["status"],
        "CANCELLED"
    );
    assert_eq!(next_event(&mut resumed).await, None);
}

async fn a_ticket_opens_its_orders_stream_and_nothing_else(postgres: bool) {
    let s = spawn_stack_with(on_store(postgres, StackOptions::default())).await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let other = s.place(&customer).await;
    let (code, t) = s
        .post(
            &format!("/api/orders/{id}/events/ticket"),
            &customer,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["expiresIn"], 300);
    let ticket = t["ticket"].as_str().unwrap().to_string();

    // The stream opens with the ticket alone, and carries the order's changes.
    let path = format!("/api/orders/{id}/events?ticket={ticket}");
    let mut events = follow_from(&s, &path, "", None).await.unwrap();
    assert_eq!(next_event(&mut events).await.unwrap()["status"], "PAID");
    let (code, _) = s
        .post(&format!("/api/orders/{id}/cancel"), &customer, json!({}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        next_event(&mut events).await.unwrap()["status"],
        "CANCELLED"
    );
    assert_eq!(next_event(&mut events).await, None);

    // It opens nothing else: not another call, not another order's stream.
    let (code, _) = s.get("/api/orders", &ticket).await;
    assert_eq!(code, 401, "a ticket is no login token");
    let (code, _) = s.get(&format!("/api/orders/{id}"), &ticket).await;
    assert_eq!(code, 401);
    let elsewhere = format!("/api/orders/{other}/events?ticket={ticket}");
    assert_eq!(follow_from(&s, &elsewhere, "", None).await.err(), Some(401));
    // The login token never opens a stream from the URL.
    for q in ["ticket", "token"] {
        let p = format!("/api/orders/{other}/events?{q}={customer}");
        assert_eq!(
            follow_from(&s, &p, "", None).await.err(),
            Some(401),
            "?{q}="
        );
    }
    // Another customer gets no ticket for it.
    let intruder = s.login("customer2").await;
    let (code, _) = s
        .post(
            &format!("/api/orders/{id}/events/ticket"),
            &intruder,
            json!({}),
        )
        .await;
    assert_eq!(code, 404);
}

/// (poller queries, stream reads) so far, from the gateway's `GET /metrics`.
async fn store_costs(s: &Stack) -> (u64, u64) {
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
    };
    (
        value("baedal_live_polls_total"),
        value("baedal_event_stream_reads_total"),
    )
}

/// Waits until the process's poller has asked the store `n` more times.
async fn polls_go_by(s: &Stack, n: u64) {
    let (from, _) = store_costs(s).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store_costs(s).await.0 < from + n {
        assert!(std::time::Instant::now() < deadline, "the poller stopped");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn idle_streams_read_nothing_and_a_change_costs_one_read_per_stream(postgres: bool) {
    const STREAMS: usize = 20;
    let s = spawn_stack_with(on_store(
        postgres,
        with_env(&[("SSE_STREAMS_PER_USER", "20")]),
    ))
    .await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    let path = format!("/api/orders/{id}/events");
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let mut rx = follow(&s, &path, &customer).await;
        assert_eq!(next_event(&mut rx).await.unwrap()["status"], "PAID");
        streams.push(rx);
    }
    // Past the poller's look-back, the streams sit idle: the one poller asks
    // the store what changed; no stream reads its order.
    polls_go_by(&s, 25).await;
    let (_, before) = store_costs(&s).await;
    polls_go_by(&s, 20).await;
    let (_, idle) = store_costs(&s).await;
    assert_eq!(idle, before, "idle streams read the store");
    // A change wakes every stream of the order, each reading it once.
    s.accept(&id, &owner, 10).await;
    for rx in &mut streams {
        assert_eq!(next_event(rx).await.unwrap()["status"], "ACCEPTED");
    }
    polls_go_by(&s, 25).await;
    let (_, after) = store_costs(&s).await;
    assert_eq!(after - idle, STREAMS as u64, "reads for one change");
}

on_both_stores!(
    idle_streams_read_nothing_and_a_change_costs_one_read_per_stream,
    a_user_holds_at_most_so_many_streams_and_a_closed_one_frees_its_place,
    a_resumed_stream_ends_at_the_final_status_whatever_id_it_resumed_from,
    a_stream_ends_after_its_lifetime_and_resumes_where_it_ended,
    a_ticket_opens_its_orders_stream_and_nothing_else,
);
