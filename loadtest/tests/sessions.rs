//! Binds, session rules and submit_sm handling, over real TCP with the rusmppc client.

mod common;

use std::time::Duration;

use common::*;
use rusmpp::{
    extra::{concatenation::SubmitSmMultipartExt, encoding::EncodedSubmitSmExt},
    values::{InterfaceVersion, Npi, Ton},
};
use smsgate_loadtest::sim::{ConcatInfo, SimConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[tokio::test]
async fn bind_with_good_credentials_succeeds_in_all_three_modes() {
    let sim = start(SimConfig::default()).await;
    for mode in [Mode::Transmitter, Mode::Receiver, Mode::Transceiver] {
        bind(sim.smpp_addr(), mode).await;
    }
    let stats = sim.stats();
    assert_eq!(stats.binds_total, 3);
    assert_eq!(stats.binds_active, 3);
}

#[tokio::test]
async fn bind_with_an_unknown_system_id_is_refused_with_rinvsysid() {
    let sim = start(SimConfig::default()).await;
    let error = try_bind(sim.smpp_addr(), Mode::Transceiver, "intruder", PASSWORD)
        .await
        .expect_err("bind is refused");
    assert_eq!(status_of(&error), 0x0F);
    assert_eq!(sim.stats().binds_total, 0);
}

#[tokio::test]
async fn bind_with_a_wrong_password_is_refused_with_rinvpaswd() {
    let sim = start(SimConfig::default()).await;
    let error = try_bind(sim.smpp_addr(), Mode::Transmitter, SYSTEM_ID, "guess")
        .await
        .expect_err("bind is refused");
    assert_eq!(status_of(&error), 0x0E);
}

#[tokio::test]
async fn smpp_5_0_binds_are_accepted_too() {
    let sim = start(SimConfig::default()).await;
    let esme = connect(sim.smpp_addr(), true).await;
    bind_on(
        &esme.client,
        Mode::Transceiver,
        SYSTEM_ID,
        PASSWORD,
        InterfaceVersion::Smpp5_0,
    )
    .await
    .expect("5.0 bind succeeds");
}

#[tokio::test]
async fn binding_twice_on_one_session_is_refused_with_ralybnd() {
    let sim = start(SimConfig::default()).await;
    let esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    let error = bind_on(
        &esme.client,
        Mode::Transceiver,
        SYSTEM_ID,
        PASSWORD,
        InterfaceVersion::Smpp3_4,
    )
    .await
    .expect_err("second bind is refused");
    assert_eq!(status_of(&error), 0x05);
}

#[tokio::test]
async fn submit_before_bind_is_refused_with_rinvbndsts() {
    let sim = start(SimConfig::default()).await;
    let esme = connect(sim.smpp_addr(), true).await;
    let error = esme
        .client
        .submit_sm(sms("4915112345678", "hi"))
        .await
        .expect_err("submit is refused");
    assert_eq!(status_of(&error), 0x04);
    assert_eq!(sim.submit_count(), 0);
}

#[tokio::test]
async fn receiver_sessions_cannot_submit() {
    let sim = start(SimConfig::default()).await;
    let esme = bind(sim.smpp_addr(), Mode::Receiver).await;
    let error = esme
        .client
        .submit_sm(sms("4915112345678", "hi"))
        .await
        .expect_err("submit is refused");
    assert_eq!(status_of(&error), 0x04);
}

#[tokio::test]
async fn submit_is_recorded_with_its_fields_and_gsm_extension_text() {
    let sim = start(SimConfig::default()).await;
    let esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    let text = "Price 5€ [a] {b} ~^|\\ @£ è";
    let mut submit = sms("4915112345678", "")
        .encode(text)
        .gsm7bit_unpacked()
        .build()
        .expect("GSM encodable");
    submit.validity_period = "000001000000000R".parse().expect("relative validity");
    let resp = esme.client.submit_sm(submit).await.expect("accepted");

    let records = sim.submits();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.message_id, resp.message_id().as_str());
    assert_eq!(r.message_id.len(), 16);
    assert!(
        r.message_id
            .chars()
            .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    );
    assert_eq!(r.system_id, SYSTEM_ID);
    assert_eq!(r.source_addr, "SMSGATE");
    assert_eq!(
        (r.source_ton, r.source_npi),
        (u8::from(Ton::Alphanumeric), 0)
    );
    assert_eq!(r.destination_addr, "4915112345678");
    assert_eq!((r.dest_ton, r.dest_npi), (1, u8::from(Npi::Isdn)));
    assert_eq!(r.esm_class, 0);
    assert_eq!(r.data_coding, 0);
    assert_eq!(r.registered_delivery & 0x03, 1);
    assert_eq!(r.validity_period, "000001000000000R");
    assert_eq!(r.udh, None);
    assert_eq!(r.concat, None);
    assert_eq!(r.text, text);
    assert!(
        r.payload.contains(&0x1B),
        "extension characters are escaped"
    );
    assert_eq!(sim.submit_count(), 1);
}

#[tokio::test]
async fn ucs2_submit_with_an_emoji_decodes_to_the_same_text() {
    let sim = start(SimConfig::default()).await;
    let esme = bind(sim.smpp_addr(), Mode::Transmitter).await;
    let text = "Привет 😀 мир";
    let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    esme.client
        .submit_sm(raw_sms("4915112345678", 0x08, 0, bytes.clone()))
        .await
        .expect("accepted");
    let r = &sim.submits()[0];
    assert_eq!(r.data_coding, 0x08);
    assert_eq!(r.text, text);
    assert_eq!(r.payload, bytes);
}

#[tokio::test]
async fn concatenated_parts_carry_their_udh_and_concat_info() {
    let sim = start(SimConfig::default()).await;
    let esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    let long = "0123456789".repeat(25);
    let parts = sms("4915112345678", "")
        .multipart(&long)
        .reference_u8(42)
        .gsm7bit_unpacked()
        .build()
        .expect("splits");
    assert_eq!(parts.len(), 2);
    for part in parts {
        esme.client.submit_sm(part).await.expect("accepted");
    }
    // A 16-bit reference (IEI 0x08), written by hand.
    let mut sixteen = vec![0x06, 0x08, 0x04, 0x12, 0x34, 0x03, 0x02];
    sixteen.extend_from_slice(b"middle");
    esme.client
        .submit_sm(raw_sms("4915112345678", 0x00, 0x40, sixteen))
        .await
        .expect("accepted");

    let records = sim.submits();
    assert_eq!(records.len(), 3);
    assert!(records[..2].iter().all(|r| r.esm_class & 0x40 != 0));
    assert_eq!(
        records[0].concat,
        Some(ConcatInfo {
            reference: 42,
            total: 2,
            seq: 1
        })
    );
    assert_eq!(records[1].concat.map(|c| c.seq), Some(2));
    assert_eq!(records[0].udh.as_deref(), Some(&[5, 0, 3, 42, 2, 1][..]));
    assert_eq!(format!("{}{}", records[0].text, records[1].text), long);
    assert_eq!(
        records[2].concat,
        Some(ConcatInfo {
            reference: 0x1234,
            total: 3,
            seq: 2
        })
    );
    assert_eq!(records[2].text, "middle");
}

#[tokio::test]
async fn throttle_answers_0x58_above_the_rate() {
    let sim = start(SimConfig {
        throttle_tps: Some(10),
        ..SimConfig::default()
    })
    .await;
    let esme = bind(sim.smpp_addr(), Mode::Transmitter).await;
    let mut throttled = 0;
    for i in 0..30 {
        match esme
            .client
            .submit_sm(sms("4915112345678", &format!("m{i}")))
            .await
        {
            Ok(_) => {}
            Err(error) => {
                assert_eq!(status_of(&error), 0x58);
                throttled += 1;
            }
        }
    }
    let stats = sim.stats();
    // 30 submits take a few ms: one window of 10, or two if they straddle a second boundary.
    assert!(throttled == 20 || throttled == 10, "throttled {throttled}");
    assert_eq!(stats.submits_throttled, throttled);
    assert_eq!(stats.submits_ok, 30 - throttled);
}

#[tokio::test]
async fn injected_errors_answer_with_the_configured_status() {
    let sim = start(SimConfig {
        error_injection: vec![(1.0, 0x14)],
        ..SimConfig::default()
    })
    .await;
    let esme = bind(sim.smpp_addr(), Mode::Transmitter).await;
    let error = esme
        .client
        .submit_sm(sms("4915112345678", "x"))
        .await
        .expect_err("refused");
    assert_eq!(status_of(&error), 0x14);
    assert_eq!(sim.stats().submits_error, 1);
    assert!(sim.submits().is_empty());
}

#[tokio::test]
async fn decimal_message_ids_are_unique_numbers() {
    let sim = start(SimConfig {
        message_id_format: smsgate_loadtest::sim::MessageIdFormat::Decimal,
        ..SimConfig::default()
    })
    .await;
    let esme = bind(sim.smpp_addr(), Mode::Transmitter).await;
    let a = esme.client.submit_sm(sms("1", "a")).await.expect("ok");
    let b = esme.client.submit_sm(sms("1", "b")).await.expect("ok");
    let (a, b) = (a.message_id().as_str(), b.message_id().as_str());
    assert!(
        a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok(),
        "{a} {b}"
    );
    assert_ne!(a, b);
}

/// Raw PDU exchange for what rusmppc cannot send.
async fn raw_exchange(sim_addr: std::net::SocketAddr, pdu: &[u8]) -> [u32; 4] {
    let mut socket = TcpStream::connect(sim_addr).await.expect("connect");
    socket.write_all(pdu).await.expect("write");
    let mut header = [0u8; 16];
    tokio::time::timeout(WAIT, socket.read_exact(&mut header))
        .await
        .expect("answered in time")
        .expect("read");
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

fn header(length: u32, id: u32, seq: u32) -> Vec<u8> {
    [length, id, 0, seq]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

#[tokio::test]
async fn enquire_link_is_answered_even_before_bind() {
    let sim = start(SimConfig::default()).await;
    let answer = raw_exchange(sim.smpp_addr(), &header(16, 0x15, 7)).await;
    assert_eq!(answer, [16, 0x8000_0015, 0, 7]);
}

#[tokio::test]
async fn unknown_commands_get_generic_nack_rinvcmdid() {
    let sim = start(SimConfig::default()).await;
    let answer = raw_exchange(sim.smpp_addr(), &header(16, 0x0000_0999, 9)).await;
    assert_eq!(answer, [16, 0x8000_0000, 0x03, 9]);
    assert_eq!(sim.stats().generic_nacks, 1);
}

#[tokio::test]
async fn undecodable_submit_gets_generic_nack_and_the_session_survives() {
    let sim = start(SimConfig::default()).await;
    let mut pdu = header(19, 0x04, 11);
    pdu.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
    pdu.extend_from_slice(&header(16, 0x15, 12));
    let mut socket = TcpStream::connect(sim.smpp_addr()).await.expect("connect");
    socket.write_all(&pdu).await.expect("write");
    let mut answers = [0u8; 32];
    tokio::time::timeout(WAIT, socket.read_exact(&mut answers))
        .await
        .expect("answered")
        .expect("read");
    assert_eq!(
        &answers[..16],
        &header(16, 0x8000_0000, 11)[..16]
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 11 { 0x02 } else { *b })
            .collect::<Vec<_>>()[..]
    );
    assert_eq!(&answers[16..], &header(16, 0x8000_0015, 12)[..]);
}

#[tokio::test]
async fn unbind_is_answered_and_ends_the_session() {
    let sim = start(SimConfig::default()).await;
    let esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    esme.client.unbind().await.expect("unbind_resp");
    // Counted before the unbind_resp is written, so visible as soon as unbind() returns.
    let stats = sim.stats();
    assert_eq!(stats.unbinds, 1);
    assert_eq!(stats.binds_active, 0);
    assert_eq!(stats.disconnects, 0);
}

#[tokio::test]
async fn while_not_accepting_new_connections_are_closed_at_once() {
    let sim = start(SimConfig::default()).await;
    sim.set_accepting(false);
    let refused = try_bind(sim.smpp_addr(), Mode::Transceiver, SYSTEM_ID, PASSWORD).await;
    assert!(refused.is_err());
    sim.set_accepting(true);
    bind(sim.smpp_addr(), Mode::Transceiver).await;
}

#[tokio::test]
async fn inject_mo_reaches_the_bound_receiver_in_gsm_or_ucs2() {
    let sim = start(SimConfig::default()).await;
    let mut esme = bind(sim.smpp_addr(), Mode::Transceiver).await;

    sim.inject_mo(SYSTEM_ID, "+4915112345678", "12345", "STOP {now} €")
        .await
        .expect("acked");
    let mo = esme.next_deliver().await;
    assert_eq!(u8::from(mo.esm_class), 0);
    assert_eq!(u8::from(mo.data_coding), 0);
    assert_eq!(mo.source_addr.as_str(), "4915112345678");
    assert_eq!(mo.destination_addr.as_str(), "12345");
    assert_eq!(
        &mo.short_message()[..],
        &b"STOP \x1b\x28now\x1b\x29 \x1b\x65"[..]
    );

    sim.inject_mo(SYSTEM_ID, "4915112345678", "12345", "Да 😀")
        .await
        .expect("acked");
    let mo = esme.next_deliver().await;
    assert_eq!(u8::from(mo.data_coding), 0x08);
    let units: Vec<u16> = mo
        .short_message()
        .chunks(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    assert_eq!(String::from_utf16(&units).expect("utf-16"), "Да 😀");
    let stats = sim.stats();
    assert_eq!(stats.mo_sent, 2);
    assert_eq!(stats.deliver_sm_resp_received, 2);
}

#[tokio::test]
async fn inject_mo_without_a_bound_receiver_fails() {
    let sim = start(SimConfig::default()).await;
    let _tx = bind(sim.smpp_addr(), Mode::Transmitter).await;
    let error = sim
        .inject_mo(SYSTEM_ID, "4915112345678", "12345", "hi")
        .await
        .expect_err("no receiver");
    assert!(matches!(
        error,
        smsgate_loadtest::sim::SimError::NoReceiver(_)
    ));
}

#[tokio::test]
async fn http_serves_stats_and_pages_of_submits() {
    let sim = start(SimConfig {
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        ..SimConfig::default()
    })
    .await;
    let esme = bind(sim.smpp_addr(), Mode::Transmitter).await;
    for i in 0..3 {
        esme.client
            .submit_sm(sms("4915112345678", &format!("n{i}")))
            .await
            .expect("ok");
    }
    let http = sim.http_addr().expect("http enabled");
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(http, "/stats").await).expect("json");
    assert_eq!(stats["submits_ok"], 3);
    assert_eq!(stats["binds_active"], 1);
    let page: serde_json::Value =
        serde_json::from_str(&http_get(http, "/submits?offset=1&limit=1").await).expect("json");
    assert_eq!(page.as_array().map(Vec::len), Some(1));
    assert_eq!(page[0]["text"], "n1");
    assert_eq!(page[0]["destination_addr"], "4915112345678");
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    socket.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .expect("body")
}

#[tokio::test]
async fn shutdown_unbinds_bound_sessions() {
    let sim = start(SimConfig::default()).await;
    let esme = bind(sim.smpp_addr(), Mode::Transceiver).await;
    tokio::time::timeout(Duration::from_secs(3), sim.shutdown())
        .await
        .expect("shutdown completes");
    assert_eq!(sim.stats().unbinds, 1);
    eventually("the client to see the close", || {
        esme.client.is_closed() || !esme.client.is_active()
    })
    .await;
}

#[tokio::test]
async fn resp_delay_holds_each_resp_without_serialising_the_session() {
    use futures::{SinkExt, StreamExt};
    use rusmpp::{Command, CommandStatus, pdus::BindTransmitter, tokio_codec::CommandCodec};
    use tokio_util::codec::Framed;

    let delay = Duration::from_millis(200);
    let sim = start(SimConfig {
        resp_delay: delay,
        ..SimConfig::default()
    })
    .await;
    // Raw framing: rusmppc 0.4.0 writes at most a few queued requests per wake-up, which
    // would measure the client rather than the simulator.
    let socket = TcpStream::connect(sim.smpp_addr()).await.expect("connect");
    let mut framed = Framed::new(socket, CommandCodec::new());
    let bind = BindTransmitter::builder()
        .system_id(SYSTEM_ID.parse().expect("system_id"))
        .password(PASSWORD.parse().expect("password"))
        .interface_version(InterfaceVersion::Smpp3_4)
        .build();
    framed
        .send(Command::new(CommandStatus::EsmeRok, 1, bind))
        .await
        .expect("send bind");
    let bound = framed.next().await.expect("bind_resp").expect("decodes");
    assert_eq!(bound.status(), CommandStatus::EsmeRok);

    let started = tokio::time::Instant::now();
    for seq in 2..22 {
        let submit = sms("49151", &format!("m{seq}"));
        framed
            .feed(Command::new(CommandStatus::EsmeRok, seq, submit))
            .await
            .expect("feed");
    }
    SinkExt::<Command>::flush(&mut framed).await.expect("flush");
    let mut answered = 0;
    while answered < 20 {
        let resp = tokio::time::timeout(WAIT, framed.next())
            .await
            .expect("in time")
            .expect("resp")
            .expect("decodes");
        assert_eq!(resp.status(), CommandStatus::EsmeRok);
        answered += 1;
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= delay, "{elapsed:?}");
    // Serialised, 20 responses would take 4 s.
    assert!(elapsed < delay * 3, "{elapsed:?}");
}
