//! How a [`Message`](super::Message)'s id and instants are written in the store's records.
//!
//! JSON (the API, webhooks) and every other human-readable format get the usual text: the
//! id as its 26 ULID characters, instants as RFC 3339. The store's binary records (postcard)
//! get the id as its 16 bytes and instants as nanoseconds since the epoch: formatting and
//! parsing RFC 3339 for five instants took 2–3 % of the gateway's CPU at load, and the
//! text made each record ~100 bytes longer (a short OTP: 199 bytes instead of 100),
//! written three times per message.
//!
//! Records written before this change hold text; [`legacy`] reads (and, for tests,
//! writes) that form. The store tells the two apart by a tag byte in front of new records.

use std::cell::Cell;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::MessageId;

thread_local! {
    static LEGACY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with ids and instants in binary formats read and written as text, the form
/// of records from before the binary one.
pub(crate) fn legacy<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            LEGACY.set(self.0);
        }
    }
    let _reset = Reset(LEGACY.replace(true));
    f()
}

/// Whether this (de)serializer gets text.
fn as_text(human_readable: bool) -> bool {
    human_readable || LEGACY.get()
}

/// A message's id.
pub(crate) mod id {
    use super::*;

    /// Writes the id: text, or its 16 bytes.
    pub(crate) fn serialize<S: Serializer>(id: &MessageId, s: S) -> Result<S::Ok, S::Error> {
        if as_text(s.is_human_readable()) {
            id.serialize(s)
        } else {
            id.to_bytes().serialize(s)
        }
    }

    /// Reads what [`serialize`] wrote.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MessageId, D::Error> {
        if as_text(d.is_human_readable()) {
            MessageId::deserialize(d)
        } else {
            <[u8; 16]>::deserialize(d).map(MessageId::from_bytes)
        }
    }
}

/// An instant.
pub(crate) mod instant {
    use super::*;

    /// Writes the instant: RFC 3339, or nanoseconds since the epoch (1677–2262).
    pub(crate) fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        if as_text(s.is_human_readable()) {
            at.serialize(s)
        } else {
            let nanos = at
                .timestamp_nanos_opt()
                .ok_or_else(|| serde::ser::Error::custom("instant outside 1677–2262"))?;
            s.serialize_i64(nanos)
        }
    }

    /// Reads what [`serialize`] wrote.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        if as_text(d.is_human_readable()) {
            DateTime::deserialize(d)
        } else {
            i64::deserialize(d).map(DateTime::from_timestamp_nanos)
        }
    }
}

/// An optional instant.
pub(crate) mod optional_instant {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Stamp(#[serde(with = "super::instant")] DateTime<Utc>);

    /// Writes the instant, if any, as [`instant`](super::instant) does.
    pub(crate) fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        at.map(Stamp).serialize(s)
    }

    /// Reads what [`serialize`] wrote.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<Stamp>::deserialize(d)?.map(|s| s.0))
    }
}

/// A byte string (a webhook's body): the same bytes on the wire as a `Vec<u8>`'s default
/// form (in postcard: length, then the bytes; in JSON: an array of numbers), read in one
/// piece rather than a byte at a time.
pub(crate) mod bytes {
    use super::*;

    /// Writes the bytes.
    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            bytes.serialize(s)
        } else {
            s.serialize_bytes(bytes)
        }
    }

    /// Reads what [`serialize`] wrote.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            Vec::deserialize(d)
        } else {
            d.deserialize_byte_buf(ByteBuf)
        }
    }

    struct ByteBuf;

    impl<'de> serde::de::Visitor<'de> for ByteBuf {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Message, sample};

    fn message() -> Message {
        let mut m = sample("hello", Kind::Otp, 1);
        m.send_at = Some(m.created_at + chrono::Duration::seconds(30));
        m.done_at = Some(m.created_at + chrono::Duration::milliseconds(1234));
        m
    }

    #[test]
    fn binary_records_round_trip_exactly_and_are_shorter_than_text_ones() {
        let m = message();
        let binary = postcard::to_stdvec(&m).expect("encodes");
        let text = super::legacy(|| postcard::to_stdvec(&m)).expect("encodes");
        assert_eq!(
            postcard::from_bytes::<Message>(&binary).expect("decodes"),
            m
        );
        assert_eq!(
            super::legacy(|| postcard::from_bytes::<Message>(&text)).expect("decodes"),
            m
        );
        // The sample (short text, four instants): 100 bytes against 199.
        assert!(
            binary.len() * 3 < text.len() * 2,
            "{} vs {} bytes",
            binary.len(),
            text.len()
        );
    }

    #[test]
    fn json_keeps_the_text_forms() {
        let m = message();
        let json = serde_json::to_value(&m).expect("encodes");
        assert_eq!(json["id"], m.id.to_string());
        assert_eq!(
            json["created_at"],
            serde_json::to_value(m.created_at).expect("encodes")
        );
        assert_eq!(serde_json::from_value::<Message>(json).expect("decodes"), m);
    }
}
