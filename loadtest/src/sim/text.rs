//! Short-message text codecs: GSM 03.38 (unpacked, one septet per octet), UCS-2/UTF-16 big
//! endian and Latin-1, plus the User Data Header walk used to find concatenation info.
//!
//! rusmpp 0.4.0 only has encoders (and its UCS-2 encoder refuses characters outside the BMP),
//! so the simulator carries its own table and uses it both ways.

/// The GSM 03.38 default alphabet, indexed by septet. 0x1B is the escape to the extension table
/// (never looked up here: the codecs handle it before indexing).
const GSM_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

const GSM_ESCAPE: u8 = 0x1B;

/// The GSM 03.38 extension table (septets that follow 0x1B).
const GSM_EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'),
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

/// data_coding values the simulator understands.
pub(crate) const DC_GSM7: u8 = 0x00;
pub(crate) const DC_LATIN1: u8 = 0x03;
pub(crate) const DC_UCS2: u8 = 0x08;

/// Decodes a short message payload according to its data_coding.
///
/// 0x00 (and the GSM message-class group 0xF0..=0xFF with the 8-bit flag clear) is GSM 03.38
/// unpacked, 0x08 is UCS-2 big endian (surrogate pairs allowed), 0x03 is Latin-1; anything
/// else is read as lossy UTF-8.
pub(crate) fn decode(data_coding: u8, payload: &[u8]) -> String {
    match data_coding {
        DC_GSM7 => decode_gsm7(payload),
        DC_UCS2 => decode_ucs2(payload),
        DC_LATIN1 => payload.iter().map(|&b| char::from(b)).collect(),
        dc if dc & 0xF0 == 0xF0 && dc & 0x04 == 0 => decode_gsm7(payload),
        _ => String::from_utf8_lossy(payload).into_owned(),
    }
}

/// GSM 03.38 unpacked: one septet per octet, 0x1B escapes into the extension table.
pub(crate) fn decode_gsm7(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut iter = bytes.iter().copied().peekable();
    while let Some(b) = iter.next() {
        if b == GSM_ESCAPE {
            match iter.peek().copied().and_then(extension_char) {
                Some(c) => {
                    out.push(c);
                    iter.next();
                }
                // 3GPP 23.038: an unknown extension shows the default-table character instead.
                None => out.push(' '),
            }
        } else {
            out.push(GSM_BASIC.get(usize::from(b)).copied().unwrap_or('\u{FFFD}'));
        }
    }
    out
}

fn extension_char(septet: u8) -> Option<char> {
    GSM_EXTENSION
        .iter()
        .find(|(s, _)| *s == septet)
        .map(|(_, c)| *c)
}

/// UCS-2 / UTF-16 big endian. Surrogate pairs become one char; unpaired surrogates and a
/// trailing odd byte become U+FFFD.
pub(crate) fn decode_ucs2(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
    let mut out: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if bytes.len() % 2 == 1 {
        out.push(char::REPLACEMENT_CHARACTER);
    }
    out
}

/// Encodes `text` as GSM 03.38 unpacked, or `None` if a character is outside the alphabet.
pub(crate) fn encode_gsm7(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let basic = GSM_BASIC.iter().position(|&g| g == c);
        if let Some(septet) = basic.filter(|&s| s != usize::from(GSM_ESCAPE)) {
            out.push(septet as u8);
        } else if let Some((septet, _)) = GSM_EXTENSION.iter().find(|(_, g)| *g == c) {
            out.push(GSM_ESCAPE);
            out.push(*septet);
        } else {
            return None;
        }
    }
    Some(out)
}

/// UTF-16 big endian (UCS-2 with surrogate pairs for characters outside the BMP).
pub(crate) fn encode_ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Encodes MO text the way handsets do: GSM 03.38 when every character fits, else UCS-2.
/// Returns the bytes and the data_coding.
pub(crate) fn encode_mo(text: &str) -> (Vec<u8>, u8) {
    match encode_gsm7(text) {
        Some(bytes) => (bytes, DC_GSM7),
        None => (encode_ucs2(text), DC_UCS2),
    }
}

/// A concatenation element found in a UDH (IEI 0x00 or 0x08) or in SAR TLVs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Concat {
    pub reference: u16,
    pub total: u8,
    pub seq: u8,
}

/// Splits `short_message` into (UDH including its length octet, payload). `None` for the UDH
/// when the header length runs past the message, in which case the whole message is payload.
pub(crate) fn split_udh(short_message: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match short_message.first() {
        Some(&udhl) if usize::from(udhl) < short_message.len() => {
            let (udh, payload) = short_message.split_at(usize::from(udhl) + 1);
            (Some(udh), payload)
        }
        _ => (None, short_message),
    }
}

/// Finds an 8-bit (IEI 0x00) or 16-bit (IEI 0x08) concatenation element in a UDH (including
/// its length octet).
pub(crate) fn concat_from_udh(udh: &[u8]) -> Option<Concat> {
    let mut ies = udh.get(1..)?;
    while let [iei, len, rest @ ..] = ies {
        let len = usize::from(*len);
        let data = rest.get(..len)?;
        match (*iei, data) {
            (0x00, &[reference, total, seq]) => {
                return Some(Concat {
                    reference: u16::from(reference),
                    total,
                    seq,
                });
            }
            (0x08, &[hi, lo, total, seq]) => {
                return Some(Concat {
                    reference: u16::from_be_bytes([hi, lo]),
                    total,
                    seq,
                });
            }
            _ => ies = &rest[len..],
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::extra::encoding::gsm7bit::Gsm7BitUnpacked;

    #[test]
    fn gsm7_round_trips_basic_and_extension_characters() {
        let text = "Hello @£$¥ èé ÄÖÑÜ§ ¿äöñüà €[]{}~^|\\ Δ_Φ";
        let bytes = encode_gsm7(text).expect("all characters are GSM");
        assert_eq!(decode_gsm7(&bytes), text);
    }

    #[test]
    fn gsm7_decoder_reads_what_rusmpp_encodes() {
        let text = "Price: 5€ [promo] {now} ~ok^ |x| back\\slash";
        let bytes = Gsm7BitUnpacked::new()
            .encode_to_vec(text)
            .expect("rusmpp encodes GSM text");
        assert_eq!(decode_gsm7(&bytes), text);
        assert_eq!(encode_gsm7(text), Some(bytes));
    }

    #[test]
    fn gsm7_unknown_escape_becomes_space_and_keeps_next_septet() {
        assert_eq!(decode_gsm7(&[0x41, 0x1B, 0x41]), "A A");
        assert_eq!(decode_gsm7(&[0x41, 0x1B]), "A ");
    }

    #[test]
    fn ucs2_surrogate_pairs_decode_to_one_char() {
        let text = "Привет 😀!";
        let bytes = encode_ucs2(text);
        assert_eq!(decode_ucs2(&bytes), text);
        assert_eq!(decode_ucs2(&[0x00, 0x41, 0x00]), "A\u{FFFD}");
        assert_eq!(decode_ucs2(&[0xD8, 0x3D, 0x00, 0x41]), "\u{FFFD}A");
    }

    #[test]
    fn decode_dispatches_on_data_coding() {
        assert_eq!(decode(0x03, &[0x63, 0x61, 0x66, 0xE9]), "café");
        assert_eq!(decode(0x08, &[0x00, 0xE9]), "é");
        assert_eq!(decode(0x00, &[0x05]), "é");
        assert_eq!(decode(0xF0, &[0x05]), "é");
        assert_eq!(decode(0x04, b"abc"), "abc");
    }

    #[test]
    fn mo_text_uses_gsm_when_it_fits_else_ucs2() {
        assert_eq!(encode_mo("STOP"), (b"STOP".to_vec(), DC_GSM7));
        assert_eq!(encode_mo("STOP 😀").1, DC_UCS2);
    }

    #[test]
    fn udh_concat_8_and_16_bit() {
        let sm = [0x05, 0x00, 0x03, 0x2A, 0x03, 0x02, b'h', b'i'];
        let (udh, payload) = split_udh(&sm);
        let udh = udh.expect("udh present");
        assert_eq!(udh, &sm[..6]);
        assert_eq!(payload, b"hi");
        assert_eq!(
            concat_from_udh(udh),
            Some(Concat {
                reference: 0x2A,
                total: 3,
                seq: 2
            })
        );
        let udh16 = [0x06, 0x08, 0x04, 0x12, 0x34, 0x02, 0x01];
        assert_eq!(
            concat_from_udh(&udh16),
            Some(Concat {
                reference: 0x1234,
                total: 2,
                seq: 1
            })
        );
        // A port-addressing element first, then the concatenation element.
        let mixed = [
            0x0A, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x00, 0x03, 0x07, 0x02, 0x01,
        ];
        assert_eq!(concat_from_udh(&mixed).map(|c| c.reference), Some(7));
        // Truncated header: no UDH, whole message is payload.
        assert_eq!(split_udh(&[0x09, 0x00]), (None, &[0x09, 0x00][..]));
    }
}
