//! Delivery receipts: content, routing, and never losing one.

mod common;

use std::time::Duration;

use common::*;
use rusmpp::values::MessageState;
use smsgate_loadtest::sim::{DelayDist, MessageIdFormat, Outcome, SimConfig};

fn quick() -> SimConfig {
    SimConfig {
        receipt_delay: DelayDist::Fixed(Duration::from_millis(10)),
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn receipt_arrives_with_tlvs_and_the_standard_text() {
    let sim = start(quick()).await;
    let mut esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    let resp = esme
        .client
        .submit_sm(sms("4915112345678", "Hello there, this is a receipt test"))
        .await
        .expect("accepted");
    let id = resp.message_id().as_str().to_owned();

    let dlr = esme.next_deliver().await;
    assert_eq!(u8::from(dlr.esm_class) & 0x3C, 0x04, "MC delivery receipt");
    assert_eq!(dlr.source_addr.as_str(), "4915112345678");
    assert_eq!(u8::from(dlr.source_addr_ton), 1);
    assert_eq!(dlr.destination_addr.as_str(), "SMSGATE");
    assert_eq!(u8::from(dlr.dest_addr_ton), 5);
    assert_eq!(receipted_message_id(&dlr).as_deref(), Some(id.as_str()));
    assert_eq!(message_state(&dlr), Some(MessageState::Delivered));
    assert_eq!(network_error(&dlr), None);
    let text = text_of(&dlr);
    assert!(
        text.starts_with(&format!("id:{id} sub:001 dlvrd:001 submit date:")),
        "{text}"
    );
    assert!(text.contains(" done date:"), "{text}");
    assert!(
        text.ends_with(" stat:DELIVRD err:000 text:Hello there, this is"),
        "{text}"
    );

    eventually("the ack to be counted", || sim.stats().receipts_sent == 1).await;
    assert_eq!(sim.stats().receipts_pending, 0);
}

#[tokio::test]
async fn text_only_receipts_carry_no_tlvs() {
    let sim = start(SimConfig {
        receipt_tlvs: false,
        ..quick()
    })
    .await;
    let mut esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    let resp = esme
        .client
        .submit_sm(sms("4915112345678", "hi"))
        .await
        .expect("accepted");
    let dlr = esme.next_deliver().await;
    assert!(dlr.tlvs().is_empty());
    assert!(text_of(&dlr).starts_with(&format!("id:{} ", resp.message_id().as_str())));
}

#[tokio::test]
async fn scripted_outcome_gives_an_undeliv_receipt_then_the_mix_again() {
    let sim = start(quick()).await;
    let mut esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    sim.script_outcomes("4915100000001", vec![Outcome::Undeliverable]);

    esme.client
        .submit_sm(sms("4915100000001", "first"))
        .await
        .expect("accepted");
    let dlr = esme.next_deliver().await;
    let text = text_of(&dlr);
    assert!(text.contains("dlvrd:000 "), "{text}");
    assert!(text.contains("stat:UNDELIV err:001"), "{text}");
    assert_eq!(message_state(&dlr), Some(MessageState::Undeliverable));
    assert_eq!(network_error(&dlr), Some(1));

    esme.client
        .submit_sm(sms("4915100000001", "second"))
        .await
        .expect("accepted");
    let dlr = esme.next_deliver().await;
    assert!(text_of(&dlr).contains("stat:DELIVRD"));
}

#[tokio::test]
async fn expired_and_rejected_outcomes_map_to_their_states() {
    let sim = start(quick()).await;
    let mut esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    sim.script_outcomes("49151", vec![Outcome::Expired, Outcome::Rejected]);
    for _ in 0..2 {
        esme.client.submit_sm(sms("49151", "x")).await.expect("ok");
    }
    let first = esme.next_deliver().await;
    let second = esme.next_deliver().await;
    assert!(text_of(&first).contains("stat:EXPIRED"));
    assert_eq!(message_state(&first), Some(MessageState::Expired));
    assert!(text_of(&second).contains("stat:REJECTD"));
    assert_eq!(message_state(&second), Some(MessageState::Rejected));
}

#[tokio::test]
async fn receipts_wait_for_a_bind_when_no_session_is_up() {
    let sim = start(quick()).await;
    let mut tx = bind(sim.smpp_addr(), Mode::Transmitter).await;
    let resp = tx
        .client
        .submit_sm(sms("4915112345678", "hi"))
        .await
        .expect("accepted");
    eventually("the receipt to be queued", || {
        sim.stats().receipts_queued == 1
    })
    .await;
    assert!(
        tx.next_deliver_within(Duration::from_millis(50))
            .await
            .is_none(),
        "transmitter sessions get no receipts"
    );

    let mut rx = bind(sim.smpp_addr(), Mode::Receiver).await;
    let dlr = rx.next_deliver().await;
    assert_eq!(
        receipted_message_id(&dlr).as_deref(),
        Some(resp.message_id().as_str())
    );
    eventually("the ack", || sim.stats().receipts_sent == 1).await;
    assert_eq!(sim.stats().receipts_queued, 0);
}

#[tokio::test]
async fn receipts_only_go_to_sessions_of_the_same_system_id() {
    let sim = start(SimConfig {
        credentials: vec![
            (SYSTEM_ID.into(), PASSWORD.into()),
            ("other".into(), "pw".into()),
        ],
        ..quick()
    })
    .await;
    let mut other = try_bind(sim.smpp_addr(), Mode::Receiver, "other", "pw")
        .await
        .expect("bind");
    let mut ours = bind(sim.smpp_addr(), Mode::Receiver).await;
    let tx = bind(sim.smpp_addr(), Mode::Transmitter).await;
    tx.client
        .submit_sm(sms("4915112345678", "hi"))
        .await
        .expect("accepted");
    ours.next_deliver().await;
    assert!(
        other
            .next_deliver_within(Duration::from_millis(100))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn dropped_connections_keep_their_pending_receipts() {
    let sim = start(SimConfig {
        receipt_delay: DelayDist::Fixed(Duration::from_millis(200)),
        ..SimConfig::default()
    })
    .await;
    let esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let resp = esme
            .client
            .submit_sm(sms("4915112345678", &format!("m{i}")))
            .await
            .expect("accepted");
        ids.push(resp.message_id().as_str().to_owned());
    }
    assert_eq!(sim.drop_connections(), 1);
    let stats = sim.stats();
    assert_eq!((stats.disconnects, stats.binds_active), (1, 0));
    eventually("the client to notice", || !esme.client.is_active()).await;
    assert!(esme.client.submit_sm(sms("1", "x")).await.is_err());

    let mut again = bind(sim.smpp_addr(), Mode::Transceiver).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let dlr = again.next_deliver().await;
        got.push(receipted_message_id(&dlr).expect("tlv"));
    }
    assert_eq!(got, ids);
    eventually("the acks", || sim.stats().receipts_sent == 3).await;
    let stats = sim.stats();
    assert_eq!(stats.disconnects, 1);
    assert_eq!(stats.receipts_pending, 0);
}

#[tokio::test]
async fn receipts_unacknowledged_when_the_session_dies_are_sent_again() {
    let sim = start(quick()).await;
    // This ESME never acknowledges deliver_sm.
    let mut silent = connect(sim.smpp_addr(), false).await;
    bind_on(
        &silent.client,
        Mode::Transceiver,
        SYSTEM_ID,
        PASSWORD,
        rusmpp::values::InterfaceVersion::Smpp3_4,
    )
    .await
    .expect("bind");
    let resp = silent
        .client
        .submit_sm(sms("4915112345678", "hi"))
        .await
        .expect("accepted");
    silent.next_deliver().await;
    assert_eq!(sim.stats().receipts_sent, 0);
    sim.drop_connections();

    let mut again = bind(sim.smpp_addr(), Mode::Receiver).await;
    let dlr = again.next_deliver().await;
    assert_eq!(
        receipted_message_id(&dlr).as_deref(),
        Some(resp.message_id().as_str())
    );
    eventually("the ack", || sim.stats().receipts_sent == 1).await;
}

#[tokio::test]
async fn refused_receipts_are_retried_after_the_retry_delay() {
    let sim = start(SimConfig {
        receipt_retry: Duration::from_millis(50),
        ..quick()
    })
    .await;
    let mut esme = connect(sim.smpp_addr(), false).await;
    bind_on(
        &esme.client,
        Mode::Transceiver,
        SYSTEM_ID,
        PASSWORD,
        rusmpp::values::InterfaceVersion::Smpp3_4,
    )
    .await
    .expect("bind");
    esme.client
        .submit_sm(sms("4915112345678", "hi"))
        .await
        .expect("accepted");
    let first = tokio::time::timeout(WAIT, esme.inbox.recv())
        .await
        .expect("in time")
        .expect("deliver_sm");
    esme.client
        .status(rusmpp::CommandStatus::EsmeRxTAppn)
        .deliver_sm_resp(
            first.sequence_number(),
            rusmpp::pdus::DeliverSmResp::default(),
        )
        .await
        .expect("sent");
    let second = tokio::time::timeout(WAIT, esme.inbox.recv())
        .await
        .expect("in time")
        .expect("deliver_sm again");
    assert_ne!(first.sequence_number(), second.sequence_number());
    esme.client
        .deliver_sm_resp(
            second.sequence_number(),
            rusmpp::pdus::DeliverSmResp::default(),
        )
        .await
        .expect("sent");
    eventually("the ack", || sim.stats().receipts_sent == 1).await;
    assert_eq!(sim.stats().receipts_refused, 1);
}

#[tokio::test]
async fn receipt_text_can_carry_a_decimal_id_while_the_resp_is_hex() {
    let sim = start(SimConfig {
        receipt_text_id_format: Some(MessageIdFormat::Decimal),
        ..quick()
    })
    .await;
    let mut esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    let resp = esme.client.submit_sm(sms("49151", "x")).await.expect("ok");
    let hex = resp.message_id().as_str().to_owned();
    let dlr = esme.next_deliver().await;
    let decimal = u64::from_str_radix(&hex, 16).expect("hex id");
    assert!(text_of(&dlr).starts_with(&format!("id:{decimal} ")));
    assert_eq!(receipted_message_id(&dlr), Some(hex));
}

#[tokio::test]
async fn no_receipt_without_registered_delivery() {
    let sim = start(quick()).await;
    let mut esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    let mut submit = sms("49151", "x");
    submit.registered_delivery = 0.into();
    esme.client.submit_sm(submit).await.expect("ok");
    assert!(
        esme.next_deliver_within(Duration::from_millis(100))
            .await
            .is_none()
    );
    assert_eq!(sim.stats().receipts_pending, 0);
}
