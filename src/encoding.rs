//! Text encoding for SMS: GSM 03.38 (7-bit default alphabet) or UCS-2, and
//! segmentation into concatenated parts.
//!
//! # The rules
//!
//! - A text is sent as **GSM 03.38** when every character is in the default
//!   alphabet or its extension table. Extension characters (`^{}\[~]|€` and
//!   form feed) cost two septets: the escape `0x1B` and the code. Otherwise the
//!   whole text goes as **UCS-2** (UTF-16BE on the wire; a character outside the
//!   BMP, such as an emoji, is a surrogate pair and costs two units).
//! - One message holds 160 septets or 70 UCS-2 units. A longer text is split
//!   into parts of at most 153 septets or 67 units. Each part's short_message
//!   starts with the 6-byte concatenation UDH `05 00 03 <ref> <total> <seq>` and
//!   the submit_sm needs the UDHI bit (0x40) in esm_class.
//! - An escape pair or a surrogate pair is never split across parts; the part
//!   then holds one unit less.
//! - GSM text is sent unpacked, one septet per octet (data_coding 0x00); UCS-2
//!   uses data_coding 0x08.
//!
//! # What comes from rusmpp-extra and what is done here
//!
//! rusmpp-extra 0.4.0 has `Gsm7BitUnpacked` and `Ucs2` encoders and a multipart
//! builder. We checked them and use none of them on the send path:
//!
//! - **GSM table.** Its default table and extension table are correct (the
//!   `crate_gsm_table_agrees_with_ours` test compares every character), but the
//!   extension table has no form feed (`1B 0A`). Its per-character lookup is
//!   private, so counting would mean encoding the text into a `Vec`, and
//!   [`plan`] runs on every HTTP request and must not allocate. It has no
//!   decoder either, and we need one for MO messages. So this module keeps one
//!   table of its own and uses it to count, encode and decode.
//! - **UCS-2.** The crate's `Ucs2` is strict UCS-2. It rejects every character
//!   outside the BMP, so an emoji makes it fail (see
//!   `crate_ucs2_rejects_emoji_so_we_encode_utf16_ourselves`). We encode
//!   UTF-16BE with `char::encode_utf16` instead.
//! - **Segmentation.** The multipart builder uses one `max_short_message_size`
//!   both as the single-message limit and as the part size plus UDH. For GSM
//!   that cannot give 160 for a single message and 153 per part: 160 gives
//!   parts of 154, and 159 sends a 160-septet text as two parts (see
//!   `crate_multipart_cannot_do_160_then_153`). It would also need the crate's
//!   encoders, which have the problems above. So we split the text ourselves,
//!   by walking characters, so a pair can never be cut.
//!
//! # `ç`
//!
//! GSM code 0x09 is `Ç` (capital C cedilla) in 3GPP TS 23.038 and the Unicode
//! mapping. Older editions showed it as a small `ç`, and some gateways send
//! `ç` as 0x09, which turns it into `Ç` on the phone. We do **not** do that:
//! `ç` is not in the alphabet, so a text that contains it is sent as UCS-2.
//! It costs more segments, but the recipient sees the text that was sent. If
//! customers want cheaper text, the caller can transliterate before planning.
//! This module never changes characters. The same goes for the Greek capitals
//! that look like Latin letters (`Α`, `Β`, ...): only
//! `ΔΦΓΛΩΠΨΣΘΞ` are in the GSM alphabet.

use serde::{Deserialize, Serialize};

/// Septets in a single (not concatenated) GSM message.
pub const GSM7_SINGLE_SEPTETS: u32 = 160;
/// Septets of text in each part of a concatenated GSM message (160 minus the 6-octet UDH in septets, rounded down).
pub const GSM7_PART_SEPTETS: u32 = 153;
/// UTF-16 units in a single (not concatenated) UCS-2 message (140 octets).
pub const UCS2_SINGLE_UNITS: u32 = 70;
/// UTF-16 units of text in each part of a concatenated UCS-2 message ((140 - 6) / 2).
pub const UCS2_PART_UNITS: u32 = 67;
/// The most parts a concatenated message can have: the UDH counts them in one octet.
pub const MAX_SEGMENTS: u32 = 255;
/// Length of the concatenation UDH with an 8-bit reference, including its length octet.
pub const CONCAT_UDH_LEN: usize = 6;

/// The GSM escape septet that announces an extension-table character.
const ESCAPE: u8 = 0x1B;

/// The alphabet a text is sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GSM 03.38 default alphabet, sent unpacked (one septet per octet).
    Gsm7,
    /// UCS-2 / UTF-16BE; non-BMP characters are sent as surrogate pairs.
    Ucs2,
}

impl Encoding {
    /// The SMPP `data_coding` value for this encoding: 0x00 (GSM default alphabet) or 0x08 (UCS-2).
    pub fn data_coding(self) -> u8 {
        match self {
            Encoding::Gsm7 => 0x00,
            Encoding::Ucs2 => 0x08,
        }
    }

    /// Name used in logs, metrics and the API (`"gsm7"` or `"ucs2"`), the same as the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }

    /// Units that fit in a single, unconcatenated message.
    fn single_limit(self) -> u32 {
        match self {
            Encoding::Gsm7 => GSM7_SINGLE_SEPTETS,
            Encoding::Ucs2 => UCS2_SINGLE_UNITS,
        }
    }

    /// Units of text that fit in one part of a concatenated message.
    fn part_limit(self) -> u32 {
        match self {
            Encoding::Gsm7 => GSM7_PART_SEPTETS,
            Encoding::Ucs2 => UCS2_PART_UNITS,
        }
    }
}

/// What admission needs: the encoding and the number of segments, computed without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextPlan {
    /// The alphabet the text will be sent in.
    pub encoding: Encoding,
    /// Number of submit_sm needed (1 for a single message, including the empty text). This can be
    /// more than [`MAX_SEGMENTS`]. Admission should reject such texts, and [`encode`] refuses them.
    pub segments: u32,
    /// Length of the text in septets (GSM, escapes included) or UTF-16 units (UCS-2).
    pub units: u32,
}

/// Works out the encoding and the segment count for `text`, without allocating.
///
/// GSM 03.38 is chosen when every character is in the default alphabet or the extension table,
/// otherwise UCS-2. The segment count follows the same splitting rules as [`encode`], so a pair
/// that would straddle a boundary is counted in the next segment.
pub fn plan(text: &str) -> TextPlan {
    let mut gsm = Counter::new(GSM7_PART_SEPTETS);
    let mut ucs2 = Counter::new(UCS2_PART_UNITS);
    let mut is_gsm = true;

    for ch in text.chars() {
        if is_gsm {
            match gsm_code(ch) {
                Some(code) => gsm.push(code.septets()),
                None => is_gsm = false,
            }
        }
        ucs2.push(ch.len_utf16() as u32);
    }

    let (encoding, counter) = if is_gsm {
        (Encoding::Gsm7, gsm)
    } else {
        (Encoding::Ucs2, ucs2)
    };
    TextPlan {
        encoding,
        segments: counter.segments(encoding.single_limit()),
        units: counter.total,
    }
}

/// Counts units and, at the same time, the parts a concatenated message would need.
struct Counter {
    part_limit: u32,
    total: u32,
    /// Parts used so far if the text ends up concatenated.
    parts: u32,
    /// Units in the last part.
    fill: u32,
}

impl Counter {
    fn new(part_limit: u32) -> Self {
        Self {
            part_limit,
            total: 0,
            parts: 1,
            fill: 0,
        }
    }

    /// Adds one character of `width` units (1, or 2 for an escape or surrogate pair).
    fn push(&mut self, width: u32) {
        self.total = self.total.saturating_add(width);
        if self.fill + width > self.part_limit {
            self.parts = self.parts.saturating_add(1);
            self.fill = width;
        } else {
            self.fill += width;
        }
    }

    fn segments(&self, single_limit: u32) -> u32 {
        if self.total <= single_limit {
            1
        } else {
            self.parts
        }
    }
}

/// Why a text could not be encoded as planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The plan says GSM 7-bit but the text holds a character outside the GSM 03.38 alphabet.
    #[error("character {ch:?} is not in the GSM 03.38 alphabet; the text must be sent as UCS-2")]
    NotGsm {
        /// The first character that does not fit.
        ch: char,
    },
    /// The text needs more parts than a concatenation UDH can count.
    #[error(
        "text needs {segments} segments, more than the {MAX_SEGMENTS} a concatenated SMS allows"
    )]
    TooManySegments {
        /// Segments the text would need.
        segments: u32,
    },
    /// The plan does not belong to this text. Plan and encode the same text.
    #[error("plan says {planned} segments but the text encodes to {actual}")]
    PlanMismatch {
        /// `plan.segments` as given.
        planned: u32,
        /// Segments the text actually produced.
        actual: u32,
    },
}

/// One submit_sm's worth: bytes for short_message (UDH included when multipart) and whether UDHI must be set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedSegment {
    /// The complete short_message: the 6-byte concatenation UDH (when `udhi`) followed by the payload.
    pub short_message: Vec<u8>,
    /// Whether the submit_sm must set the UDHI bit (0x40) in esm_class.
    pub udhi: bool,
}

/// Encodes `text` into the short_message bytes of `plan.segments` submit_sm PDUs.
///
/// `plan` must come from [`plan`] on the same text; its encoding is used as is (a GSM-only text
/// may be forced to UCS-2 by a plan with the UCS-2 segment count). `concat_ref` is the 8-bit
/// concatenation reference written into every part's UDH; the caller must keep it unique per
/// destination among messages in flight. Single-segment texts get no UDH.
pub fn encode(
    text: &str,
    plan: TextPlan,
    concat_ref: u8,
) -> Result<Vec<EncodedSegment>, EncodeError> {
    if plan.segments > MAX_SEGMENTS {
        return Err(EncodeError::TooManySegments {
            segments: plan.segments,
        });
    }
    let encoding = plan.encoding;
    let multipart = plan.segments > 1;
    let part_limit = if multipart {
        encoding.part_limit()
    } else {
        encoding.single_limit()
    };
    let header = if multipart { CONCAT_UDH_LEN } else { 0 };
    // Largest payload is an unconcatenated GSM text: 160 octets.
    let capacity = header + GSM7_SINGLE_SEPTETS as usize;

    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(plan.segments as usize);
    let mut current = new_part(multipart, concat_ref, capacity);
    let mut fill: u32 = 0;

    for ch in text.chars() {
        // Encode the character first so its width is known before choosing the part.
        let mut bytes = [0u8; 4];
        let (len, width) = match encoding {
            Encoding::Gsm7 => match gsm_code(ch) {
                Some(Gsm::Basic(code)) => {
                    bytes[0] = code;
                    (1, 1)
                }
                Some(Gsm::Extension(code)) => {
                    bytes[0] = ESCAPE;
                    bytes[1] = code;
                    (2, 2)
                }
                None => return Err(EncodeError::NotGsm { ch }),
            },
            Encoding::Ucs2 => {
                let mut units = [0u16; 2];
                let units = ch.encode_utf16(&mut units);
                for (i, unit) in units.iter().enumerate() {
                    bytes[2 * i..2 * i + 2].copy_from_slice(&unit.to_be_bytes());
                }
                (2 * units.len(), units.len() as u32)
            }
        };

        if fill + width > part_limit {
            if !multipart {
                // The plan said one segment but the text is longer.
                return Err(EncodeError::PlanMismatch {
                    planned: plan.segments,
                    actual: plan_segments_for(text, encoding),
                });
            }
            parts.push(std::mem::replace(
                &mut current,
                new_part(multipart, concat_ref, capacity),
            ));
            fill = 0;
            if parts.len() >= MAX_SEGMENTS as usize {
                return Err(EncodeError::TooManySegments {
                    segments: plan_segments_for(text, encoding),
                });
            }
        }
        current.extend_from_slice(&bytes[..len]);
        fill += width;
    }
    parts.push(current);

    let actual = parts.len() as u32;
    if actual != plan.segments {
        return Err(EncodeError::PlanMismatch {
            planned: plan.segments,
            actual,
        });
    }

    // `actual` is at most MAX_SEGMENTS (255), so the casts below cannot truncate.
    let total = actual as u8;
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(i, mut short_message)| {
            if multipart {
                short_message[4] = total;
                short_message[5] = (i + 1) as u8;
            }
            EncodedSegment {
                short_message,
                udhi: multipart,
            }
        })
        .collect())
}

/// A fresh part buffer; multipart parts start with the UDH (total and seq are filled in at the end).
fn new_part(multipart: bool, concat_ref: u8, capacity: usize) -> Vec<u8> {
    let mut part = Vec::with_capacity(capacity);
    if multipart {
        part.extend_from_slice(&[0x05, 0x00, 0x03, concat_ref, 0, 0]);
    }
    part
}

/// Segment count of `text` in a given encoding (for error messages when the plan was wrong).
fn plan_segments_for(text: &str, encoding: Encoding) -> u32 {
    let mut counter = Counter::new(encoding.part_limit());
    for ch in text.chars() {
        let width = match encoding {
            Encoding::Gsm7 => gsm_code(ch).map_or(1, Gsm::septets),
            Encoding::Ucs2 => ch.len_utf16() as u32,
        };
        counter.push(width);
    }
    counter.segments(encoding.single_limit())
}

/// Decode a short_message payload (after any UDH) by data_coding: 0x00 GSM 03.38 unpacked, 0x08 UCS-2, 0x03 Latin-1, 0x01 IA5/ASCII; others lossy UTF-8. Used for MO messages and receipts.
///
/// Data coding groups from GSM 03.38 whose alphabet is clear are handled too: 0xC0–0xDF
/// (message waiting, GSM alphabet), 0xE0–0xEF (message waiting, UCS-2) and 0xF0–0xF3 (message
/// class, GSM alphabet). Never fails: bytes that cannot be decoded become U+FFFD, an unknown
/// extension code shows its default-table character and a trailing lone escape is dropped, as
/// 3GPP TS 23.038 asks of a receiving entity.
pub fn decode(data_coding: u8, payload: &[u8]) -> String {
    match data_coding {
        0x00 | 0xC0..=0xDF | 0xF0..=0xF3 => decode_gsm7_unpacked(payload),
        0x08 | 0xE0..=0xEF => decode_ucs2(payload),
        0x03 => payload.iter().map(|&b| char::from(b)).collect(),
        0x01 => payload
            .iter()
            .map(|&b| {
                if b.is_ascii() {
                    char::from(b)
                } else {
                    char::REPLACEMENT_CHARACTER
                }
            })
            .collect(),
        _ => String::from_utf8_lossy(payload).into_owned(),
    }
}

fn decode_gsm7_unpacked(payload: &[u8]) -> String {
    let mut out = String::with_capacity(payload.len());
    let mut bytes = payload.iter().map(|&b| b & 0x7F);
    while let Some(septet) = bytes.next() {
        if septet != ESCAPE {
            out.push(BASIC[usize::from(septet)]);
            continue;
        }
        match bytes.next() {
            // 1B 1B is reserved for a further extension table: show a space (23.038 6.2.1.1).
            Some(ESCAPE) => out.push(' '),
            Some(code) => out.push(extension_char(code).unwrap_or(BASIC[usize::from(code)])),
            None => {}
        }
    }
    out
}

fn decode_ucs2(payload: &[u8]) -> String {
    let units = payload.chunks(2).map(|pair| match pair {
        [hi, lo] => u16::from_be_bytes([*hi, *lo]),
        // A dangling odd octet: decodes to U+FFFD via the lone-surrogate path.
        _ => 0xDC00,
    });
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Concatenation information from a UDH (3GPP TS 23.040 IEI 0x00 or 0x08).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concat {
    /// Reference shared by all parts of one message (8-bit references are widened).
    pub reference: u16,
    /// Number of parts in the message (at least 1).
    pub total: u8,
    /// This part's position, 1-based, at most `total`.
    pub seq: u8,
}

/// Split a UDH off a short_message when UDHI is set: returns (udh incl. length byte, payload) and the concatenation info if present (IEI 0x00 8-bit ref, IEI 0x08 16-bit ref).
///
/// Returns `None` when the message is empty or the UDH length octet points past the end.
/// Information elements are walked within the header; a malformed element ends the walk, and a
/// concatenation element with `total == 0`, `seq == 0` or `seq > total` is ignored (23.040 says
/// the receiver shall ignore it). If several concatenation elements appear, the last one wins.
pub fn split_udh(short_message: &[u8]) -> Option<(&[u8], &[u8], Option<Concat>)> {
    let (&udhl, _) = short_message.split_first()?;
    let header_end = 1 + usize::from(udhl);
    if short_message.len() < header_end {
        return None;
    }
    let (udh, payload) = short_message.split_at(header_end);

    let mut concat = None;
    let mut elements = &udh[1..];
    while let [iei, iel, rest @ ..] = elements {
        let Some((data, next)) = rest.split_at_checked(usize::from(*iel)) else {
            break;
        };
        let found = match (*iei, data) {
            (0x00, &[reference, total, seq]) => Some(Concat {
                reference: u16::from(reference),
                total,
                seq,
            }),
            (0x08, &[hi, lo, total, seq]) => Some(Concat {
                reference: u16::from_be_bytes([hi, lo]),
                total,
                seq,
            }),
            _ => None,
        };
        if let Some(c) = found.filter(|c| c.total > 0 && c.seq > 0 && c.seq <= c.total) {
            concat = Some(c);
        }
        elements = next;
    }
    Some((udh, payload, concat))
}

// ---------------------------------------------------------------------------------------------
// GSM 03.38 tables
// ---------------------------------------------------------------------------------------------

/// A character's GSM 03.38 code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gsm {
    /// A default-alphabet septet.
    Basic(u8),
    /// An extension-table code, sent after [`ESCAPE`].
    Extension(u8),
}

impl Gsm {
    fn septets(self) -> u32 {
        match self {
            Gsm::Basic(_) => 1,
            Gsm::Extension(_) => 2,
        }
    }
}

/// The GSM 03.38 default alphabet, indexed by septet. 0x1B is the escape, never a character;
/// it holds NBSP only so decoding has something to print, as in the Unicode mapping file.
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{A0}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The GSM 03.38 extension table: (code after the escape, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed (page break)
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// No GSM code for this ASCII character.
const NOT_GSM: u8 = 0xFF;
/// Flag on [`ASCII_TO_GSM`] entries that are extension codes (all are below 0x80).
const EXT_FLAG: u8 = 0x80;

/// ASCII fast path: the GSM code of every ASCII character, derived from the tables above.
const ASCII_TO_GSM: [u8; 128] = {
    let mut table = [NOT_GSM; 128];
    let mut septet = 0;
    while septet < 128 {
        let ch = BASIC[septet] as u32;
        if septet != ESCAPE as usize && ch < 128 {
            table[ch as usize] = septet as u8;
        }
        septet += 1;
    }
    let mut i = 0;
    while i < EXTENSION.len() {
        let (code, ch) = EXTENSION[i];
        if (ch as u32) < 128 {
            table[ch as usize] = EXT_FLAG | code;
        }
        i += 1;
    }
    table
};

/// The GSM 03.38 code for `ch`, or `None` if it is not in the alphabet.
fn gsm_code(ch: char) -> Option<Gsm> {
    if ch.is_ascii() {
        return match ASCII_TO_GSM[ch as usize] {
            NOT_GSM => None,
            v if v & EXT_FLAG != 0 => Some(Gsm::Extension(v & !EXT_FLAG)),
            v => Some(Gsm::Basic(v)),
        };
    }
    // Non-ASCII characters of the default alphabet; must match BASIC (checked by a test).
    let septet = match ch {
        '£' => 0x01,
        '¥' => 0x03,
        'è' => 0x04,
        'é' => 0x05,
        'ù' => 0x06,
        'ì' => 0x07,
        'ò' => 0x08,
        'Ç' => 0x09,
        'Ø' => 0x0B,
        'ø' => 0x0C,
        'Å' => 0x0E,
        'å' => 0x0F,
        'Δ' => 0x10,
        'Φ' => 0x12,
        'Γ' => 0x13,
        'Λ' => 0x14,
        'Ω' => 0x15,
        'Π' => 0x16,
        'Ψ' => 0x17,
        'Σ' => 0x18,
        'Θ' => 0x19,
        'Ξ' => 0x1A,
        'Æ' => 0x1C,
        'æ' => 0x1D,
        'ß' => 0x1E,
        'É' => 0x1F,
        '¤' => 0x24,
        '¡' => 0x40,
        'Ä' => 0x5B,
        'Ö' => 0x5C,
        'Ñ' => 0x5D,
        'Ü' => 0x5E,
        '§' => 0x5F,
        '¿' => 0x60,
        'ä' => 0x7B,
        'ö' => 0x7C,
        'ñ' => 0x7D,
        'ü' => 0x7E,
        'à' => 0x7F,
        '€' => return Some(Gsm::Extension(0x65)),
        _ => return None,
    };
    Some(Gsm::Basic(septet))
}

/// The character for an extension-table code, if the code is assigned.
fn extension_char(code: u8) -> Option<char> {
    EXTENSION
        .iter()
        .find(|(c, _)| *c == code)
        .map(|&(_, ch)| ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads (UDH stripped) of the encoded segments.
    fn payloads(segments: &[EncodedSegment]) -> Vec<&[u8]> {
        segments
            .iter()
            .map(|s| {
                if s.udhi {
                    &s.short_message[CONCAT_UDH_LEN..]
                } else {
                    &s.short_message[..]
                }
            })
            .collect()
    }

    fn encode_planned(text: &str) -> (TextPlan, Vec<EncodedSegment>) {
        let p = plan(text);
        let segs = encode(text, p, 0x2A).expect("text encodes as planned");
        assert_eq!(
            segs.len() as u32,
            p.segments,
            "encode honours plan.segments"
        );
        (p, segs)
    }

    fn roundtrip(text: &str) -> String {
        let (p, segs) = encode_planned(text);
        payloads(&segs)
            .into_iter()
            .map(|payload| decode(p.encoding.data_coding(), payload))
            .collect()
    }

    #[test]
    fn encoding_names_and_data_coding() {
        assert_eq!(Encoding::Gsm7.data_coding(), 0x00);
        assert_eq!(Encoding::Ucs2.data_coding(), 0x08);
        assert_eq!(Encoding::Gsm7.as_str(), "gsm7");
        assert_eq!(Encoding::Ucs2.as_str(), "ucs2");
        assert_eq!(serde_json::to_string(&Encoding::Ucs2).unwrap(), "\"ucs2\"");
        assert_eq!(
            serde_json::from_str::<Encoding>("\"gsm7\"").unwrap(),
            Encoding::Gsm7
        );
    }

    #[test]
    fn empty_text_is_one_empty_gsm_segment() {
        let p = plan("");
        assert_eq!(
            p,
            TextPlan {
                encoding: Encoding::Gsm7,
                segments: 1,
                units: 0
            }
        );
        let segs = encode("", p, 0).unwrap();
        assert_eq!(
            segs,
            vec![EncodedSegment {
                short_message: vec![],
                udhi: false
            }]
        );
    }

    #[test]
    fn ascii_160_chars_is_one_gsm_segment_without_udh() {
        let text = "a".repeat(160);
        let (p, segs) = encode_planned(&text);
        assert_eq!(p.encoding, Encoding::Gsm7);
        assert_eq!((p.segments, p.units), (1, 160));
        assert!(!segs[0].udhi);
        assert_eq!(segs[0].short_message, vec![0x61; 160]);
    }

    #[test]
    fn ascii_161_chars_is_two_segments_of_153_and_8() {
        let text = "a".repeat(161);
        let (p, segs) = encode_planned(&text);
        assert_eq!((p.encoding, p.segments, p.units), (Encoding::Gsm7, 2, 161));
        let lens: Vec<usize> = payloads(&segs).iter().map(|p| p.len()).collect();
        assert_eq!(lens, vec![153, 8]);
        assert!(segs.iter().all(|s| s.udhi));
    }

    #[test]
    fn udh_bytes_are_exact() {
        let text = "x".repeat(400);
        let segs = encode(&text, plan(&text), 0xA7).unwrap();
        assert_eq!(segs.len(), 3);
        for (i, seg) in segs.iter().enumerate() {
            assert_eq!(
                &seg.short_message[..6],
                &[0x05, 0x00, 0x03, 0xA7, 3, i as u8 + 1]
            );
        }
        assert_eq!(segs[0].short_message.len(), 6 + 153);
        assert_eq!(segs[2].short_message.len(), 6 + 400 - 2 * 153);
    }

    #[test]
    fn extension_chars_count_double() {
        let p = plan(&"€".repeat(80));
        assert_eq!((p.encoding, p.segments, p.units), (Encoding::Gsm7, 1, 160));
        let p = plan(&"€".repeat(81));
        assert_eq!((p.encoding, p.segments, p.units), (Encoding::Gsm7, 2, 162));
        for ch in ['^', '{', '}', '\\', '[', '~', ']', '|', '€', '\u{0C}'] {
            assert_eq!(plan(&ch.to_string()).units, 2, "{ch:?} costs two septets");
        }
    }

    #[test]
    fn euro_at_segment_boundary_moves_whole_to_next_segment() {
        // 152 septets, then '€' would need septets 153 and 154: it moves to part 2.
        let text = format!("{}€{}", "a".repeat(152), "b".repeat(10));
        let (p, segs) = encode_planned(&text);
        assert_eq!((p.segments, p.units), (2, 164));
        let parts = payloads(&segs);
        assert_eq!(parts[0].len(), 152);
        assert_eq!(*parts[0].last().unwrap(), 0x61, "no lone escape at the end");
        assert_eq!(&parts[1][..2], &[0x1B, 0x65]);
        assert_eq!(parts[1].len(), 12);
    }

    #[test]
    fn boundary_rule_can_add_a_segment_that_plain_division_would_not() {
        // 153 '€' are 306 septets: 2 parts by plain division, but a part holds only 76 whole
        // pairs (152 septets), so the real split is 152 + 152 + 2 and plan() must say 3.
        let text = "€".repeat(153);
        let (p, segs) = encode_planned(&text);
        assert_eq!(p.units, 306);
        assert_eq!(p.segments, 3);
        let lens: Vec<usize> = payloads(&segs).iter().map(|p| p.len()).collect();
        assert_eq!(lens, vec![152, 152, 2]);
    }

    #[test]
    fn cyrillic_210_chars_is_four_ucs2_segments_of_67_67_67_9() {
        let text: String = "Привет мир".chars().cycle().take(210).collect();
        let (p, segs) = encode_planned(&text);
        assert_eq!((p.encoding, p.segments, p.units), (Encoding::Ucs2, 4, 210));
        let units: Vec<usize> = payloads(&segs).iter().map(|p| p.len() / 2).collect();
        assert_eq!(units, vec![67, 67, 67, 9]);
        for (i, seg) in segs.iter().enumerate() {
            assert!(seg.udhi);
            assert_eq!(
                &seg.short_message[..6],
                &[0x05, 0x00, 0x03, 0x2A, 4, i as u8 + 1],
                "same ref, total 4, seq {}",
                i + 1
            );
            assert_eq!(
                split_udh(&seg.short_message).unwrap().2.unwrap().seq,
                i as u8 + 1
            );
        }
        assert_eq!(roundtrip(&text), text);
    }

    #[test]
    fn cyrillic_70_chars_is_one_segment_71_is_two() {
        let p = plan(&"ж".repeat(70));
        assert_eq!((p.encoding, p.segments, p.units), (Encoding::Ucs2, 1, 70));
        let p = plan(&"ж".repeat(71));
        assert_eq!((p.encoding, p.segments, p.units), (Encoding::Ucs2, 2, 71));
        let (_, segs) = encode_planned(&"ж".repeat(70));
        assert_eq!(segs[0].short_message.len(), 140);
        assert_eq!(&segs[0].short_message[..2], &[0x04, 0x36]);
    }

    #[test]
    fn emoji_is_a_surrogate_pair_of_two_units() {
        let p = plan("😀");
        assert_eq!((p.encoding, p.segments, p.units), (Encoding::Ucs2, 1, 2));
        let (_, segs) = encode_planned("😀");
        assert_eq!(segs[0].short_message, vec![0xD8, 0x3D, 0xDE, 0x00]);
    }

    #[test]
    fn emoji_35_fit_one_segment_36_need_two_and_no_pair_is_split() {
        let p = plan(&"😀".repeat(35));
        assert_eq!((p.encoding, p.segments, p.units), (Encoding::Ucs2, 1, 70));

        let text = "😀".repeat(36);
        let (p, segs) = encode_planned(&text);
        assert_eq!((p.segments, p.units), (2, 72));
        let parts = payloads(&segs);
        // 67 units per part would cut the 34th emoji in half, so part 1 holds 33 (66 units).
        assert_eq!(parts[0].len(), 66 * 2);
        assert_eq!(parts[1].len(), 6 * 2);
        for part in parts {
            let decoded = decode(0x08, part);
            assert!(!decoded.contains(char::REPLACEMENT_CHARACTER));
            assert!(decoded.chars().all(|c| c == '😀'), "whole emoji only");
        }
        assert_eq!(roundtrip(&text), text);
    }

    #[test]
    fn gsm_text_round_trips_including_national_and_extension_chars() {
        let texts = [
            "@£$¥èéùìòÇØøÅå",
            "ΔΦΓΛΩΠΨΣΘΞ ÆæßÉ ¤ ¡¿ ÄÖÑÜ§ äöñüà",
            "Price: 10€ ^{}\\[~]| and\u{0C}page two\r\nend",
            "plain ascii with 'quotes' and \"double\" _under_ #hash% &*+,-./:;<=>?!",
        ];
        for text in texts {
            let p = plan(text);
            assert_eq!(p.encoding, Encoding::Gsm7, "{text:?}");
            assert_eq!(roundtrip(text), text);
        }
        let long = "Grüße aus Köln! Preis: 5€ [Rabatt] ~ ".repeat(12);
        assert!(plan(&long).segments > 1);
        assert_eq!(roundtrip(&long), long);
    }

    #[test]
    fn ucs2_text_round_trips() {
        for text in [
            "Привет, мир!",
            "日本語のテキスト",
            "mixed 😀👍🏽 and ascii",
            "😀".repeat(100).as_str(),
        ] {
            assert_eq!(plan(text).encoding, Encoding::Ucs2);
            assert_eq!(roundtrip(text), text);
        }
    }

    #[test]
    fn one_non_gsm_char_makes_the_whole_text_ucs2() {
        let text = "Dzień dobry"; // 'ń' is not GSM
        assert_eq!(plan(text).encoding, Encoding::Ucs2);
        let text = format!("{}ą", "a".repeat(100));
        let p = plan(&text);
        assert_eq!((p.encoding, p.segments, p.units), (Encoding::Ucs2, 2, 101));
        assert_eq!(roundtrip(&text), text);
    }

    #[test]
    fn small_c_cedilla_and_tab_and_backtick_are_not_gsm() {
        assert_eq!(plan("ç").encoding, Encoding::Ucs2, "ç is not mapped to Ç");
        assert_eq!(plan("a\tb").encoding, Encoding::Ucs2);
        assert_eq!(plan("`").encoding, Encoding::Ucs2);
        assert_eq!(plan("Ç").encoding, Encoding::Gsm7);
        assert_eq!(
            plan("Α").encoding,
            Encoding::Ucs2,
            "Greek Alpha is not Latin A"
        );
    }

    #[test]
    fn forcing_gsm_on_non_gsm_text_is_an_error() {
        let plan = TextPlan {
            encoding: Encoding::Gsm7,
            segments: 1,
            units: 1,
        };
        assert_eq!(encode("ą", plan, 0), Err(EncodeError::NotGsm { ch: 'ą' }));
    }

    #[test]
    fn gsm_text_can_be_forced_to_ucs2() {
        let text = "hello";
        let plan = TextPlan {
            encoding: Encoding::Ucs2,
            segments: 1,
            units: 5,
        };
        let segs = encode(text, plan, 0).unwrap();
        assert_eq!(
            segs[0].short_message,
            vec![0, b'h', 0, b'e', 0, b'l', 0, b'l', 0, b'o']
        );
    }

    #[test]
    fn a_plan_for_another_text_is_rejected() {
        let short = plan("short");
        assert_eq!(
            encode(&"a".repeat(200), short, 0),
            Err(EncodeError::PlanMismatch {
                planned: 1,
                actual: 2
            })
        );
        let long = plan(&"a".repeat(400));
        assert_eq!(
            encode(&"a".repeat(200), long, 0),
            Err(EncodeError::PlanMismatch {
                planned: 3,
                actual: 2
            })
        );
    }

    #[test]
    fn more_than_255_segments_is_refused() {
        let text = "a".repeat(153 * 255);
        let p = plan(&text);
        assert_eq!(p.segments, 255);
        assert_eq!(encode(&text, p, 0).unwrap().len(), 255);

        let text = "a".repeat(153 * 255 + 1);
        let p = plan(&text);
        assert_eq!(p.segments, 256);
        assert_eq!(
            encode(&text, p, 0),
            Err(EncodeError::TooManySegments { segments: 256 })
        );
    }

    #[test]
    fn decode_other_data_codings() {
        assert_eq!(decode(0x03, &[0x63, 0x61, 0x66, 0xE9]), "café");
        assert_eq!(decode(0x01, b"plain\x80"), "plain\u{FFFD}");
        assert_eq!(decode(0x02, "ünï".as_bytes()), "ünï");
        assert_eq!(decode(0x04, &[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(
            decode(0xF0, &[0x00, 0x02]),
            "@$",
            "class 0 with GSM alphabet"
        );
        assert_eq!(
            decode(0x08, &[0x04, 0x1F, 0x00]),
            "П\u{FFFD}",
            "odd trailing octet"
        );
        assert_eq!(
            decode(0x08, &[0xD8, 0x3D]),
            "\u{FFFD}",
            "lone high surrogate"
        );
    }

    #[test]
    fn decode_gsm_edge_cases() {
        // Unknown extension code falls back to the default table; 1B 1B shows a space;
        // a trailing escape is dropped; the top bit of an octet is ignored.
        assert_eq!(decode(0x00, &[0x1B, 0x41]), "A");
        assert_eq!(decode(0x00, &[0x1B, 0x1B, 0x41]), " A");
        assert_eq!(decode(0x00, &[0x41, 0x1B]), "A");
        assert_eq!(decode(0x00, &[0xC1]), "A");
        assert_eq!(decode(0x00, &[0x1B, 0x0A]), "\u{0C}");
    }

    #[test]
    fn split_udh_8_bit_reference() {
        let sm = [0x05, 0x00, 0x03, 0xA7, 0x03, 0x02, b'h', b'i'];
        let (udh, payload, concat) = split_udh(&sm).unwrap();
        assert_eq!(udh, &sm[..6]);
        assert_eq!(payload, b"hi");
        assert_eq!(
            concat,
            Some(Concat {
                reference: 0xA7,
                total: 3,
                seq: 2
            })
        );
    }

    #[test]
    fn split_udh_16_bit_reference() {
        let sm = [0x06, 0x08, 0x04, 0x12, 0x34, 0x02, 0x01, b'x'];
        let (udh, payload, concat) = split_udh(&sm).unwrap();
        assert_eq!(udh.len(), 7);
        assert_eq!(payload, b"x");
        assert_eq!(
            concat,
            Some(Concat {
                reference: 0x1234,
                total: 2,
                seq: 1
            })
        );
    }

    #[test]
    fn split_udh_finds_concat_after_other_elements() {
        // Application port addressing (IEI 0x05, 4 octets), then 8-bit concatenation.
        let sm = [
            0x0B, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x00, 0x03, 0x01, 0x02, 0x02, 0xAA,
        ];
        let (udh, payload, concat) = split_udh(&sm).unwrap();
        assert_eq!(udh.len(), 12);
        assert_eq!(payload, &[0xAA]);
        assert_eq!(
            concat.map(|c| (c.reference, c.total, c.seq)),
            Some((1, 2, 2))
        );
    }

    #[test]
    fn split_udh_rejects_bad_headers_and_ignores_bad_concat() {
        assert_eq!(split_udh(&[]), None);
        assert_eq!(split_udh(&[0x05, 0x00, 0x03]), None, "length past the end");
        // seq 0, seq > total and total 0 are ignored but the header still splits.
        for bad in [
            [0x05, 0x00, 0x03, 1, 2, 0],
            [0x05, 0x00, 0x03, 1, 2, 3],
            [0x05, 0x00, 0x03, 1, 0, 0],
        ] {
            let (udh, payload, concat) = split_udh(&bad).unwrap();
            assert_eq!((udh.len(), payload.len(), concat), (6, 0, None));
        }
        // An element whose length overruns the header ends the walk.
        let (_, _, concat) = split_udh(&[0x03, 0x00, 0x05, 0x01]).unwrap();
        assert_eq!(concat, None);
    }

    /// Tiny deterministic PRNG so the fuzz tests need no dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn decode_and_split_udh_never_panic_on_random_bytes() {
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let len = (xorshift(&mut seed) % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            let dc = xorshift(&mut seed) as u8;
            let _ = decode(dc, &bytes);
            if let Some((udh, payload, _)) = split_udh(&bytes) {
                assert_eq!(udh.len() + payload.len(), bytes.len());
            }
        }
    }

    #[test]
    fn plan_and_encode_agree_on_random_texts() {
        let alphabet: Vec<char> = "aZ0 @€[]^|ж😀ąÇ\u{0C}\n".chars().collect();
        let mut seed = 42;
        for _ in 0..3_000 {
            let len = (xorshift(&mut seed) % 400) as usize;
            let gsm_only = xorshift(&mut seed) & 1 == 0;
            let pool = if gsm_only {
                &alphabet[..7]
            } else {
                &alphabet[..]
            };
            let text: String = (0..len)
                .map(|_| pool[(xorshift(&mut seed) % pool.len() as u64) as usize])
                .collect();
            let p = plan(&text);
            let segs = encode(&text, p, 7).unwrap();
            assert_eq!(segs.len() as u32, p.segments);
            let max_len = match (p.encoding, p.segments) {
                (Encoding::Gsm7, 1) => 160,
                (Encoding::Gsm7, _) => 6 + 153,
                (Encoding::Ucs2, _) => 140,
            };
            assert!(segs.iter().all(|s| s.short_message.len() <= max_len));
            assert_eq!(roundtrip(&text), text);
        }
    }

    #[test]
    fn tables_are_consistent() {
        for septet in 0u8..128 {
            if septet == ESCAPE {
                continue;
            }
            let ch = BASIC[usize::from(septet)];
            assert_eq!(gsm_code(ch), Some(Gsm::Basic(septet)), "{ch:?}");
        }
        for (code, ch) in EXTENSION {
            assert_eq!(gsm_code(ch), Some(Gsm::Extension(code)), "{ch:?}");
            assert_eq!(extension_char(code), Some(ch));
        }
        let gsm_chars = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| gsm_code(c).is_some())
            .count();
        assert_eq!(gsm_chars, 127 + EXTENSION.len());
    }

    #[test]
    fn crate_gsm_table_agrees_with_ours() {
        use rusmpp::extra::encoding::gsm7bit::Gsm7BitUnpacked;
        let codec = Gsm7BitUnpacked::new();
        for septet in 0u8..128 {
            if septet == ESCAPE {
                continue;
            }
            let ch = BASIC[usize::from(septet)];
            assert_eq!(
                codec.encode_to_vec(&ch.to_string()).unwrap(),
                vec![septet],
                "{ch:?}"
            );
        }
        for (code, ch) in EXTENSION {
            let theirs = codec.encode_to_vec(&ch.to_string());
            if ch == '\u{0C}' {
                assert!(theirs.is_err(), "rusmpp-extra 0.4.0 has no form feed");
            } else {
                assert_eq!(theirs.unwrap(), vec![ESCAPE, code], "{ch:?}");
            }
        }
    }

    #[test]
    fn crate_ucs2_rejects_emoji_so_we_encode_utf16_ourselves() {
        use rusmpp::extra::encoding::ucs2::Ucs2;
        let bmp = "Привет, 日本";
        let (_, ours) = encode_planned(bmp);
        assert_eq!(
            Ucs2::new().encode_to_vec(bmp).unwrap(),
            ours[0].short_message
        );
        assert!(Ucs2::new().encode_to_vec("😀").is_err());
    }

    #[test]
    fn crate_multipart_cannot_do_160_then_153() {
        use rusmpp::extra::concatenation::SubmitSmMultipartExt;
        use rusmpp::pdus::SubmitSm;
        let parts = |text: &str, max: usize| {
            SubmitSm::builder()
                .build()
                .multipart(text)
                .max_short_message_size(max)
                .gsm7bit_unpacked()
                .build()
                .unwrap()
                .iter()
                .map(|sm| sm.short_message().len())
                .collect::<Vec<_>>()
        };
        // 160 keeps a 160-char text whole but makes 154-septet parts...
        assert_eq!(parts(&"a".repeat(160), 160), vec![160]);
        assert_eq!(parts(&"a".repeat(161), 160), vec![6 + 154, 6 + 7]);
        // ...and 159 gives 153-septet parts but splits a 160-char text.
        assert_eq!(parts(&"a".repeat(160), 159), vec![6 + 153, 6 + 7]);
    }
}
