//! Inbound (MO) keywords: STOP and friends opt the sender out, START/UNSTOP
//! opt them back in, HELP asks for the help text. A keyword is the whole
//! text, compared trimmed and case-insensitively.

/// Keywords that opt out.
pub const OPT_OUT_WORDS: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];

/// Keywords that opt back in.
pub const OPT_IN_WORDS: &[&str] = &["START", "UNSTOP"];

/// Keywords that ask for help (CTIA lists both).
pub const HELP_WORDS: &[&str] = &["HELP", "INFO"];

/// What an MO text asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keyword {
    /// Opt out.
    Stop,
    /// Opt back in.
    Start,
    /// Send the help text.
    Help,
}

impl Keyword {
    /// The name used in the inbound listing and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Stop => "stop",
            Keyword::Start => "start",
            Keyword::Help => "help",
        }
    }
}

/// The keyword an MO text is, if it is one (the whole text, any case and
/// spacing); `national` adds a country's own opt-out words (upper-cased).
pub fn keyword(text: &str, national: &[String]) -> Option<Keyword> {
    let word = text.trim().to_uppercase();
    if OPT_OUT_WORDS.contains(&word.as_str()) || national.contains(&word) {
        Some(Keyword::Stop)
    } else if OPT_IN_WORDS.contains(&word.as_str()) {
        Some(Keyword::Start)
    } else if HELP_WORDS.contains(&word.as_str()) {
        Some(Keyword::Help)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_whole_words_in_any_case_and_spacing() {
        let none: &[String] = &[];
        assert_eq!(keyword("STOP", none), Some(Keyword::Stop));
        assert_eq!(keyword("  stop \n", none), Some(Keyword::Stop));
        assert_eq!(keyword("Unsubscribe", none), Some(Keyword::Stop));
        assert_eq!(keyword("quit", none), Some(Keyword::Stop));
        assert_eq!(keyword("Start", none), Some(Keyword::Start));
        assert_eq!(keyword("unstop", none), Some(Keyword::Start));
        assert_eq!(keyword(" help", none), Some(Keyword::Help));
        assert_eq!(keyword("Info", none), Some(Keyword::Help));
        assert_eq!(keyword("please stop", none), None);
        assert_eq!(keyword("STOPS", none), None);
        assert_eq!(keyword("help me", none), None);
        assert_eq!(keyword("", none), None);
        assert_eq!(keyword("arret", none), None);
        assert_eq!(
            keyword(" Arret ", &["ARRET".to_owned()]),
            Some(Keyword::Stop)
        );
    }
}
