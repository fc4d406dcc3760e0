//! The messages a run sends: kind, recipient, sender, text and the correlation token, all
//! drawn from the message's sequence number (so a run is reproducible for a given seed).

use super::config::{Config, Kind, KindMix, PerKind, TextClass, TextMix};

/// One message to send.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    /// Sequence number within the run (0-based, over all phases).
    pub seq: u64,
    /// `LG<run>-<seq>`: starts the text and is the `client_ref`; found again in the
    /// simulator's records and in webhooks.
    pub token: String,
    pub kind: Kind,
    pub to: String,
    pub from: String,
    pub text: String,
    /// Index of the API key to send it with.
    pub account: usize,
}

/// Draws messages.
#[derive(Debug)]
pub(crate) struct Traffic {
    run_id: String,
    seed: u64,
    senders: PerKind<String>,
    destinations: PerKind<String>,
    numbers: Option<u64>,
    accounts: usize,
}

/// SplitMix64: a fast, well-mixed hash of a counter.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The token prefix of a run: `LG` and the run id, then `-`.
pub(crate) fn token_prefix(run_id: &str) -> String {
    format!("LG{run_id}-")
}

/// Reads the sequence number of a token of this run at the start of (or anywhere in) `text`.
pub(crate) fn find_token(text: &str, prefix: &str) -> Option<u64> {
    let at = text.find(prefix)?;
    let rest = &text[at + prefix.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

const FILLER: &str = "Thank you for choosing ACME. This is a load test of the smsgate SMS \
gateway; the text is long enough for two segments, so concatenation and per-segment receipts \
are exercised too. Ignore it.";

const FILLER_UCS2: &str = "Спасибо, что выбрали ACME. Это сообщение из нагрузочного теста \
шлюза smsgate; оно достаточно длинное, чтобы занять несколько частей.";

impl Traffic {
    pub(crate) fn new(config: &Config, run_id: &str) -> Traffic {
        Traffic {
            run_id: run_id.to_owned(),
            seed: config.seed,
            senders: config.senders.clone(),
            destinations: config.destinations.clone(),
            numbers: config.numbers.filter(|n| *n > 0),
            accounts: config.account_count().max(1),
        }
    }

    /// The message with sequence number `seq`; `request` numbers the request carrying it,
    /// which picks the account (a batch goes with one key).
    pub(crate) fn message(&self, seq: u64, request: u64, mix: &KindMix, texts: &TextMix) -> Msg {
        let roll = |n: u64| mix64(self.seed.wrapping_mul(0x100_0000_01B3) ^ mix64(seq ^ (n << 56)));
        let kind = mix.pick(roll(1));
        let class = texts.pick(roll(2));
        let token = format!("{}{seq}", token_prefix(&self.run_id));
        let to = self.number(kind, roll(3));
        let code = roll(4) % 1_000_000;
        Msg {
            seq,
            text: text(kind, class, &token, code),
            token,
            kind,
            to,
            from: self.senders.get(kind).clone(),
            account: usize::try_from(request % self.accounts as u64).unwrap_or(0),
        }
    }

    fn number(&self, kind: Kind, roll: u64) -> String {
        let pattern = self.destinations.get(kind);
        let xs = pattern.bytes().filter(|b| *b == b'x').count();
        let space = 10u64.saturating_pow(u32::try_from(xs).unwrap_or(u32::MAX));
        let mut n = match self.numbers {
            Some(distinct) => mix64(roll % distinct) % space,
            None => roll % space,
        };
        let mut digits = vec![b'0'; xs];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let mut digits = digits.into_iter();
        pattern
            .bytes()
            .map(|b| {
                if b == b'x' {
                    char::from(digits.next().unwrap_or(b'0'))
                } else {
                    char::from(b)
                }
            })
            .collect()
    }
}

/// The text of a message: the token first (so it is in the first segment), then words that
/// fit the kind and the text class.
fn text(kind: Kind, class: TextClass, token: &str, code: u64) -> String {
    let gsm = match kind {
        Kind::Otp => format!("{token} Your ACME code is {code:06}. It expires in 5 minutes."),
        Kind::Transactional => {
            format!("{token} Your ACME order {code} has shipped and arrives tomorrow.")
        }
        Kind::Marketing => {
            format!("{token} ACME weekend sale: 20% off everything. Reply STOP to opt out")
        }
    };
    let ucs2 = match kind {
        Kind::Otp => format!("{token} Ваш код ACME: {code:06}. Никому его не сообщайте."),
        Kind::Transactional => format!("{token} Заказ ACME {code} отправлен."),
        Kind::Marketing => format!("{token} Скидка 20% в ACME. STOP: отписка"),
    };
    match class {
        TextClass::Gsm => gsm,
        TextClass::GsmLong => format!("{gsm} {FILLER}"),
        TextClass::Ucs2 => ucs2,
        TextClass::Ucs2Long => format!("{ucs2} {FILLER_UCS2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_vary_and_carry_their_token() {
        let config = Config::default();
        let t = Traffic::new(&config, "ab12");
        let mix: KindMix = "otp=1,transactional=1,marketing=1".parse().unwrap();
        let texts: TextMix = "gsm=1,gsm_long=1,ucs2=1,ucs2_long=1".parse().unwrap();
        let a = t.message(7, 7, &mix, &texts);
        let b = t.message(8, 8, &mix, &texts);
        assert_ne!(a.to, b.to);
        assert_eq!(find_token(&a.text, "LGab12-"), Some(7));
        assert!(a.text.starts_with("LGab12-7 "));
        let gb = t.number(Kind::Otp, 123);
        assert_eq!(gb, "+447400000123");
        for seq in (0..200).chain(9_999_990..10_000_000) {
            let m = t.message(seq, seq, &mix, &texts);
            assert!(m.to.len() >= 12, "{}", m.to);
            // Each class keeps to its segment count.
            let chars = m.text.chars().count();
            let gsm = m.text.is_ascii();
            let range = match (gsm, chars) {
                (true, ..=160) => 1..=160,
                (true, _) => 161..=306,
                (false, ..=70) => 1..=70,
                (false, _) => 135..=201,
            };
            assert!(range.contains(&chars), "{chars}: {}", m.text);
        }
        for kind in Kind::ALL {
            for class in [
                TextClass::Gsm,
                TextClass::GsmLong,
                TextClass::Ucs2,
                TextClass::Ucs2Long,
            ] {
                let n = text(kind, class, "LGab12-9999999", 123456).chars().count();
                let ok = match class {
                    TextClass::Gsm => n <= 160,
                    TextClass::GsmLong => (161..=306).contains(&n),
                    TextClass::Ucs2 => n <= 70,
                    TextClass::Ucs2Long => (135..=201).contains(&n),
                };
                assert!(ok, "{kind} {class}: {n} characters");
            }
        }
        assert_eq!(find_token("xx LGab12-42", "LGab12-"), Some(42));
        assert_eq!(find_token("LGzz-42", "LGab12-"), None);
    }
}
