//! Operators stepping in: cancelling an order's workflow in Temporal, the
//! payment reconciliation that settles what no workflow will, and a refund the
//! gateway refuses for good.

use baedal_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

/// One rider only, so "the rider is free again" is observable: the next order
/// is offered to that same rider.
async fn one_rider_stack() -> Stack {
    let mut opts = StackOptions::default();
    opts.env.push(("BAEDAL_DEMO_RIDERS", "1".into()));
    spawn_stack_with(opts).await
}

/// How far the order gets before the operator cancels it.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Stage {
    Paid,
    Accepted,
    RiderAssigned,
    DeliveryStarted,
    PickedUp,
}

/// Drives an order to `stage`, cancels its workflow as an operator, and checks
/// every promise: CANCELLED / OPERATOR_CANCELLED in every view, refunded once,
/// everyone notified, the rider free again.
async fn operator_cancels_at(stage: Stage) {
    let s = one_rider_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let rider = s.login("rider1").await;
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    let mut before = vec!["PAID"];
    if stage >= Stage::Accepted {
        s.accept(&id, &owner, 20).await;
        before.push("ACCEPTED");
        s.rider_with_offer(&id, &[("rider1".into(), rider.clone())])
            .await;
    }
    let post = |path: String, token: &str| {
        let token = token.to_string();
        let s = &s;
        async move {
            let (code, body) = s.post(&path, &token, json!({})).await;
            assert_eq!(code, 200, "{path}: {body}");
        }
    };
    if stage >= Stage::RiderAssigned {
        post(format!("/api/rider/offers/{id}/accept"), &rider).await;
        before.push("RIDER_ASSIGNED");
    }
    if stage >= Stage::DeliveryStarted {
        post(format!("/api/shop/orders/{id}/ready"), &owner).await;
        before.push("DELIVERY_STARTED");
    }
    if stage >= Stage::PickedUp {
        post(format!("/api/rider/deliveries/{id}/pickup"), &rider).await;
        before.push("PICKED_UP");
    }
    s.wait_status(&id, &customer, before.last().unwrap()).await;

    s.operator_cancel(&id).await;

    let o = s
        .eventually(
            &format!("/api/orders/{id}"),
            &customer,
            Duration::from_secs(40),
            |o| o["status"] == "CANCELLED" && o["refund"]["status"] == "REFUNDED",
        )
        .await;
    assert_eq!(o["reason"], "OPERATOR_CANCELLED");
    assert_eq!(o["refund"]["amount"], ORDER_TOTAL);
    let mut expected = before.clone();
    expected.push("CANCELLED");
    assert_eq!(statuses(&o), expected);
    s.wait_workflow_closed(&id).await;

    // Charged once, refunded once.
    let charges = s.sim.charges_of(&id);
    assert_eq!(charges.len(), 1);
    assert_eq!(
        (charges[0].refunded, charges[0].refund_count),
        (ORDER_TOTAL, 1)
    );

    // The owner's view, and the rider's if one was assigned.
    let (_, dtl) = s.get("/api/shop/orders", &owner).await;
    let mine = dtl.as_array().unwrap().iter().find(|d| d["orderId"] == id);
    assert_eq!(mine.unwrap()["status"], "CANCELLED", "{dtl}");
    let (_, deliveries) = s.get("/api/rider/deliveries", &rider).await;
    let delivery = deliveries
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["orderId"] == id);
    if stage >= Stage::RiderAssigned {
        assert_eq!(delivery.unwrap()["status"], "CANCELLED", "{deliveries}");
    }
    let (_, offers) = s.get("/api/rider/offers", &rider).await;
    assert_eq!(offers, json!([]), "the offer was withdrawn");

    // The customer is told, once.
    let feed = s
        .eventually(
            "/api/notifications",
            &customer,
            Duration::from_secs(20),
            |n| {
                n.as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["orderId"] == id && m["status"] == "CANCELLED")
            },
        )
        .await;
    let cancelled = feed
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["orderId"] == id && m["status"] == "CANCELLED")
        .count();
    assert_eq!(cancelled, 1, "{feed}");

    // The only rider is free: the next order is offered to them.
    let next = s.place(&customer).await;
    s.accept(&next, &owner, 20).await;
    s.rider_with_offer(&next, &[("rider1".into(), rider.clone())])
        .await;
    if stage == Stage::PickedUp {
        record_history(&s, &id, "operator_cancelled").await;
    }
}

#[tokio::test]
async fn operator_cancel_of_a_paid_order_refunds_it_once_and_tells_everyone() {
    operator_cancels_at(Stage::Paid).await;
}

#[tokio::test]
async fn operator_cancel_while_a_rider_is_offered_the_order_withdraws_the_offer() {
    operator_cancels_at(Stage::Accepted).await;
}

#[tokio::test]
async fn operator_cancel_after_a_rider_is_assigned_frees_the_rider() {
    operator_cancels_at(Stage::RiderAssigned).await;
}

#[tokio::test]
async fn operator_cancel_once_delivery_has_started_refunds_and_frees_the_rider() {
    operator_cancels_at(Stage::DeliveryStarted).await;
}

#[tokio::test]
async fn operator_cancel_after_pickup_refunds_and_frees_the_rider() {
    operator_cancels_at(Stage::PickedUp).await;
}

#[tokio::test]
async fn a_delivered_order_ignores_an_operator_cancel_and_keeps_its_charge() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.accept(&id, &owner, 20).await;
    let riders = s.riders(6).await;
    let (_, rider) = s.rider_with_offer(&id, &riders).await;
    s.deliver(&id, &owner, &rider).await;
    let o = s.wait_status(&id, &customer, "DELIVERED").await;
    // The workflow may already be closed; a cancel of a closed one is refused.
    let _ = s
        .temporal
        .get_workflow_handle::<baedal_workflows::OrderFulfillment>(baedal_workflows::workflow_id(
            &id,
        ))
        .cancel(Default::default())
        .await;
    s.wait_workflow_closed(&id).await;
    let (_, after) = s.get(&format!("/api/orders/{id}"), &customer).await;
    assert_eq!(after["status"], "DELIVERED");
    assert_eq!(after["refund"], Value::Null);
    assert_eq!(after["history"], o["history"]);
    assert_eq!(s.sim.charges_of(&id)[0].refund_count, 0);
}

#[tokio::test]
async fn the_reconciliation_refunds_a_terminated_paid_order_once_and_leaves_live_and_delivered_ones()
 {
    let mut opts = StackOptions::default();
    opts.env.push(("RECONCILE_MIN_AGE", "0s".into()));
    // The gateway fails refunds for a while below; keep the breaker out of it.
    opts.env.push(("PAYMENT_BREAKER_FAILURES", "1000".into()));
    let s = spawn_stack_with(opts).await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;

    // Registered at start-up, running the reconciliation.
    let d = s
        .temporal
        .get_schedule_handle(s.cfg.reconcile_schedule_id())
        .describe(Default::default())
        .await
        .expect("the reconciliation schedule exists");
    match d.action() {
        temporalio_client::schedules::ScheduleDescriptionAction::StartWorkflow(a) => {
            assert_eq!(a.workflow_type(), "PaymentReconciliation")
        }
        other => panic!("unexpected schedule action {other:?}"),
    }

    let delivered = s.place(&customer).await;
    s.accept(&delivered, &owner, 20).await;
    let riders = s.riders(6).await;
    let (_, rider) = s.rider_with_offer(&delivered, &riders).await;
    s.deliver(&delivered, &owner, &rider).await;
    s.wait_workflow_closed(&delivered).await;

    let live = s.place(&customer).await;
    let terminated = s.place(&customer).await;
    s.temporal
        .get_workflow_handle::<baedal_workflows::OrderFulfillment>(baedal_workflows::workflow_id(
            &terminated,
        ))
        .terminate(Default::default())
        .await
        .unwrap();
    assert_eq!(s.sim.charges_of(&terminated)[0].refund_count, 0);

    // A gateway that cannot refund right now: reported, left for the next run.
    s.sim.fail_refunds_with(Some(503));
    let report = s.reconcile_now().await;
    assert_eq!(report.retry_later, vec![terminated.clone()], "{report:?}");
    assert!(report.refunded.is_empty(), "{report:?}");
    s.sim.fail_refunds_with(None);

    let report = s.reconcile_now().await;
    assert_eq!(report.refunded, vec![terminated.clone()], "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report.live >= 1 && report.delivered >= 1, "{report:?}");
    let c = &s.sim.charges_of(&terminated)[0];
    assert_eq!((c.refunded, c.refund_count), (ORDER_TOTAL, 1));
    assert_eq!(s.sim.charges_of(&delivered)[0].refund_count, 0);
    assert_eq!(s.sim.charges_of(&live)[0].refund_count, 0);

    // Once: the next run finds nothing more to refund.
    let again = s.reconcile_now().await;
    assert!(again.refunded.is_empty(), "{again:?}");
    assert_eq!(s.sim.charges_of(&terminated)[0].refund_count, 1);
}

#[tokio::test]
async fn a_refund_the_gateway_refuses_for_good_answers_and_leaves_the_order_to_an_operator() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    s.sim.fail_refunds_with(Some(404));
    let (code, body) = s
        .post(&format!("/api/orders/{id}/cancel"), &customer, json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(body["refund"]["status"], "FAILED", "{body}");
    let o = s.wait_status(&id, &customer, "CANCELLED").await;
    assert_eq!(o["refund"]["status"], "FAILED");
    // Operators find it by its search attribute.
    s.eventually_listed(
        "RefundStatus = 'FAILED'",
        &baedal_workflows::workflow_id(&id),
    )
    .await;
    // Tried once, never again, and the breaker stays closed for everyone else.
    let (_, m) = s.get("/api/metrics", &customer).await;
    assert_eq!(m["paymentBreaker"]["state"], "closed", "{m}");
    assert_eq!(m["refunds"]["failed"], 1, "{m}");
    s.wait_workflow_closed(&id).await;
    s.sim.fail_refunds_with(None);
    let other = s.place(&customer).await;
    assert_ne!(other, id);
    assert_eq!(s.sim.charges_of(&id)[0].refund_count, 0);
}
