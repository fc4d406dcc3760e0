//! Read deadlines over raw sockets: a body shorter than its Content-Length
//! and a head sent a byte at a time both get `408 request_timeout` once
//! their deadline (`http.body_timeout_s`, `http.header_timeout_s`) has
//! passed, and the connection is closed; an idle keep-alive connection is
//! closed without an answer; other clients are served meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, KEY, metric_sum, otp};
use serde_json::Value;
use smsgate_loadtest::sim::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The deadlines the tests run with (both 2 s).
const DEADLINE: Duration = Duration::from_secs(2);
/// How much later than its deadline a 408 may come on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);

async fn start() -> Harness {
    Harness::start_with(SimConfig::default(), 1, 16, |c| {
        c.http.header_timeout_s = DEADLINE.as_secs();
        c.http.body_timeout_s = DEADLINE.as_secs();
    })
    .await
}

async fn connect(h: &Harness) -> TcpStream {
    TcpStream::connect(h.gateway.http_addr())
        .await
        .expect("connect")
}

/// Reads until the peer closes (or `SLACK` past the deadline); returns what
/// was read and when the first byte came.
async fn read_to_close(stream: &mut TcpStream, started: Instant) -> (String, Option<Duration>) {
    let mut out = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 4096];
    let until = DEADLINE + SLACK;
    loop {
        let left = until.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                first.get_or_insert_with(|| started.elapsed());
                out.extend_from_slice(&buf[..n]);
            }
            Err(_) => panic!(
                "connection still open {until:?} after start; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), first)
}

/// Asserts `answer` is one 408 `request_timeout` envelope.
fn assert_408(answer: &str) {
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).expect("a body");
    let body: Value = serde_json::from_str(body).expect("JSON envelope");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
}

/// Asserts the answer came after the deadline and not much later.
fn assert_on_time(first: Option<Duration>) {
    let at = first.expect("an answer came");
    assert!(
        at >= DEADLINE - Duration::from_millis(100),
        "too early: {at:?}"
    );
    assert!(at <= DEADLINE + SLACK, "too late: {at:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_gets_408_and_the_connection_closes() {
    let h = start().await;
    let mut stream = connect(&h).await;
    let started = Instant::now();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"to\":"
    );
    stream.write_all(head.as_bytes()).await.expect("write");

    let (answer, first) = read_to_close(&mut stream, started).await;
    assert_408(&answer);
    assert_on_time(first);
    let metrics = h.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "smsgate_messages_rejected_total",
            &["request_timeout"]
        ) >= 1.0,
        "counted as a rejection"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_a_byte_at_a_time_gets_408_while_other_clients_are_served() {
    let h = start().await;
    let mut stream = connect(&h).await;
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        // Never finishes the head: one byte every 200 ms until cut off.
        for b in b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-padding: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            if writer.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let answer = async {
        let mut out = Vec::new();
        let mut first = None;
        let mut buf = [0u8; 4096];
        loop {
            let left = (DEADLINE + SLACK).saturating_sub(started.elapsed());
            match tokio::time::timeout(left, reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    first.get_or_insert_with(|| started.elapsed());
                    out.extend_from_slice(&buf[..n]);
                }
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), first)
    };
    let other_client = async {
        // Sent while the trickle is going on, answered at once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.send(otp("+447400111222", "Your code is 123456")).await
    };
    let ((answer, first), (status, body)) = tokio::select! {
        () = trickle => panic!("the trickle ended by itself"),
        both = async { tokio::join!(answer, other_client) } => both,
    };
    assert_eq!(status, 202, "{body}");
    assert_408(&answer);
    assert_on_time(first);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_serves_requests_and_closes_quietly_when_idle() {
    let h = start().await;
    let mut stream = connect(&h).await;
    let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    for _ in 0..2 {
        stream.write_all(request).await.expect("write");
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(SLACK, stream.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Nothing more is asked: the connection closes with no bytes sent.
    let started = Instant::now();
    let (answer, first) = read_to_close(&mut stream, started).await;
    assert_eq!(answer, "", "an idle connection gets no 408");
    assert_eq!(first, None);
    assert!(started.elapsed() >= DEADLINE - Duration::from_millis(100));
    h.stop().await;
}
