//! Test helpers: ESMEs built on rusmppc 0.4.0 talking to a real simulator over TCP.
#![allow(dead_code)]

use std::{net::SocketAddr, str::FromStr, time::Duration};

use futures::StreamExt;
use rusmpp::{
    Command, CommandId, CommandStatus, Pdu,
    pdus::{BindReceiver, BindTransceiver, BindTransmitter, DeliverSm, DeliverSmResp, SubmitSm},
    tlvs::TlvValue,
    types::{COctetString, OctetString},
    values::{DataCoding, EsmClass, InterfaceVersion, MessageState, Npi, RegisteredDelivery, Ton},
};
use rusmppc::{Client, ConnectionBuilder, Event, error::Error};
use smsgate_loadtest::sim::{SimConfig, Simulator};
use tokio::{net::TcpStream, sync::mpsc};

pub const SYSTEM_ID: &str = "smsgate";
pub const PASSWORD: &str = "secret";
pub const WAIT: Duration = Duration::from_secs(5);

/// Works around a rusmppc 0.4.0 stall: its connection task leaves the action loop after 5
/// actions without re-registering its waker, so further requests (submit_sm, deliver_sm_resp)
/// sit in the queue until the socket or a timer wakes the task, i.e. until the next inbound
/// PDU or the next enquire_link (30 s by default). A short enquire_link interval bounds that.
pub const RUSMPPC_WAKE_UP: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Transmitter,
    Receiver,
    Transceiver,
}

/// A connected (and usually bound) ESME. deliver_sm are acked (when `auto_ack`) and forwarded
/// to `inbox`; the SMSC's unbind is answered.
pub struct Esme {
    pub client: Client,
    pub inbox: mpsc::UnboundedReceiver<Command>,
}

impl std::fmt::Debug for Esme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Esme").finish_non_exhaustive()
    }
}

impl Esme {
    /// The next deliver_sm, or panics after [`WAIT`].
    pub async fn next_deliver(&mut self) -> DeliverSm {
        self.next_deliver_within(WAIT)
            .await
            .expect("a deliver_sm should arrive")
    }

    pub async fn next_deliver_within(&mut self, wait: Duration) -> Option<DeliverSm> {
        let command = tokio::time::timeout(wait, self.inbox.recv())
            .await
            .ok()
            .flatten()?;
        match command.pdu() {
            Some(Pdu::DeliverSm(d)) => Some(d.clone()),
            other => panic!("expected deliver_sm, got {other:?}"),
        }
    }
}

pub async fn start(cfg: SimConfig) -> Simulator {
    Simulator::start(cfg).await.expect("simulator starts")
}

/// Connects without binding.
pub async fn connect(addr: SocketAddr, auto_ack: bool) -> Esme {
    let stream = TcpStream::connect(addr).await.expect("tcp connect");
    let (client, mut events) = ConnectionBuilder::new()
        .disable_interface_version_check()
        .enquire_link_interval(RUSMPPC_WAKE_UP)
        .response_timeout(WAIT)
        .connected(stream);
    let (tx, inbox) = mpsc::unbounded_channel();
    let acker = client.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let Event::Incoming(command) = event else {
                continue;
            };
            match command.id() {
                CommandId::DeliverSm => {
                    if auto_ack {
                        let _ = acker
                            .deliver_sm_resp(command.sequence_number(), DeliverSmResp::default())
                            .await;
                    }
                    let _ = tx.send(command);
                }
                CommandId::Unbind => {
                    let _ = acker.unbind_resp(command.sequence_number()).await;
                }
                _ => {}
            }
        }
    });
    Esme { client, inbox }
}

/// Binds as SMPP 3.4 with the given credentials.
pub async fn try_bind(
    addr: SocketAddr,
    mode: Mode,
    system_id: &str,
    password: &str,
) -> Result<Esme, Error> {
    let esme = connect(addr, true).await;
    bind_on(
        &esme.client,
        mode,
        system_id,
        password,
        InterfaceVersion::Smpp3_4,
    )
    .await?;
    Ok(esme)
}

pub async fn bind_on(
    client: &Client,
    mode: Mode,
    system_id: &str,
    password: &str,
    version: InterfaceVersion,
) -> Result<(), Error> {
    let system_id = COctetString::from_str(system_id).expect("system_id");
    let password = COctetString::from_str(password).expect("password");
    match mode {
        Mode::Transmitter => client
            .bind_transmitter(
                BindTransmitter::builder()
                    .system_id(system_id)
                    .password(password)
                    .interface_version(version)
                    .build(),
            )
            .await
            .map(drop),
        Mode::Receiver => client
            .bind_receiver(
                BindReceiver::builder()
                    .system_id(system_id)
                    .password(password)
                    .interface_version(version)
                    .build(),
            )
            .await
            .map(drop),
        Mode::Transceiver => client
            .bind_transceiver(
                BindTransceiver::builder()
                    .system_id(system_id)
                    .password(password)
                    .interface_version(version)
                    .build(),
            )
            .await
            .map(drop),
    }
}

pub async fn bind(addr: SocketAddr, mode: Mode) -> Esme {
    try_bind(addr, mode, SYSTEM_ID, PASSWORD)
        .await
        .expect("bind succeeds")
}

/// The command_status of a refused request.
pub fn status_of(error: &Error) -> u32 {
    match error {
        Error::UnexpectedResponse { response } => u32::from(response.status()),
        other => panic!("expected an error response, got {other:?}"),
    }
}

/// A plain GSM submit_sm (note: rusmpp's `EsmClass::default()` encodes as 0x08, so 0 is explicit) from SMSGATE to `destination` asking for a receipt.
pub fn sms(destination: &str, text: &str) -> SubmitSm {
    SubmitSm::builder()
        .source_addr_ton(Ton::Alphanumeric)
        .source_addr_npi(Npi::Unknown)
        .source_addr(COctetString::from_str("SMSGATE").expect("address"))
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(COctetString::from_str(destination).expect("address"))
        .esm_class(EsmClass::from(0))
        .registered_delivery(RegisteredDelivery::request_all())
        .data_coding(DataCoding::McSpecific)
        .short_message(OctetString::from_vec(text.as_bytes().to_vec()).expect("fits"))
        .build()
}

/// A submit_sm with raw bytes and a data_coding.
pub fn raw_sms(destination: &str, data_coding: u8, esm_class: u8, bytes: Vec<u8>) -> SubmitSm {
    let mut submit = sms(destination, "");
    submit.data_coding = DataCoding::from(data_coding);
    submit.esm_class = EsmClass::from(esm_class);
    submit.set_short_message(OctetString::from_vec(bytes).expect("fits"));
    submit
}

pub fn text_of(deliver: &DeliverSm) -> String {
    String::from_utf8_lossy(deliver.short_message()).into_owned()
}

pub fn receipted_message_id(deliver: &DeliverSm) -> Option<String> {
    deliver.tlvs().iter().find_map(|tlv| match tlv.value() {
        Some(TlvValue::ReceiptedMessageId(id)) => Some(id.as_str().to_owned()),
        _ => None,
    })
}

pub fn message_state(deliver: &DeliverSm) -> Option<MessageState> {
    deliver.tlvs().iter().find_map(|tlv| match tlv.value() {
        Some(TlvValue::MessageState(state)) => Some(*state),
        _ => None,
    })
}

pub fn network_error(deliver: &DeliverSm) -> Option<u16> {
    deliver.tlvs().iter().find_map(|tlv| match tlv.value() {
        Some(TlvValue::NetworkErrorCode(code)) => Some(code.error_code),
        _ => None,
    })
}

/// Polls `cond` until it holds or [`WAIT`] passes.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn ok() -> CommandStatus {
    CommandStatus::EsmeRok
}
