//! A client that never finishes its request keeps nothing open: unfinished
//! headers close the connection after `HEADER_READ_TIMEOUT`, an unfinished body
//! gets a 408 problem after `REQUEST_TIMEOUT`.

use baedal_tests::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn slow_stack(postgres: bool) -> Stack {
    let mut opts = on_store(postgres, StackOptions::default());
    opts.env.push(("HEADER_READ_TIMEOUT", "1s".into()));
    opts.env.push(("REQUEST_TIMEOUT", "2s".into()));
    spawn_stack_with(opts).await
}

/// Writes `sent`, then reads whatever the server says until it closes the
/// connection (bounded: a server that never closes fails the test).
async fn send_and_read_to_close(s: &Stack, sent: &str) -> String {
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(sent.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), conn.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn unfinished_headers_are_dropped(postgres: bool) {
    let s = slow_stack(postgres).await;
    let answer =
        send_and_read_to_close(&s, "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    // Closed, or answered with a 408 before closing; never served.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // The server is fine for everyone else.
    let (code, _) = s.get("/api/health", "").await;
    assert_eq!(code, 200);
}

async fn an_unfinished_body_is_answered_408_as_a_problem(postgres: bool) {
    let s = slow_stack(postgres).await;
    let answer = send_and_read_to_close(
        &s,
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n{\"username\":",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
}

on_both_stores!(
    unfinished_headers_are_dropped,
    an_unfinished_body_is_answered_408_as_a_problem,
);
