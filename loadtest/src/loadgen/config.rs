//! What a run does: the target, the traffic shape, the phases and what is measured. Loadable
//! from a scenario TOML file ([`Config::load`]); command-line flags override it
//! ([`Config::apply`]).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use serde::{Deserialize, Serialize};

use super::error::LoadgenError;

/// The priority class of a message (the `kind` field of `POST /v1/messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One-time passwords: the highest priority.
    Otp,
    /// Notifications.
    Transactional,
    /// Promotions: the lowest priority, subject to consent and quiet hours.
    Marketing,
}

impl Kind {
    /// Every kind, in priority order.
    pub const ALL: [Kind; 3] = [Kind::Otp, Kind::Transactional, Kind::Marketing];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Otp => "otp",
            Kind::Transactional => "transactional",
            Kind::Marketing => "marketing",
        }
    }

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "otp" => Ok(Kind::Otp),
            "transactional" => Ok(Kind::Transactional),
            "marketing" => Ok(Kind::Marketing),
            other => Err(format!(
                "unknown kind {other:?} (otp, transactional, marketing)"
            )),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shape of a message text: length and encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextClass {
    /// GSM 03.38, one segment.
    Gsm,
    /// GSM 03.38, about 300 characters: two segments.
    GsmLong,
    /// UCS-2 (Cyrillic), one segment.
    Ucs2,
    /// UCS-2, about 150 characters: three segments.
    Ucs2Long,
}

impl FromStr for TextClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "gsm" => Ok(TextClass::Gsm),
            "gsm_long" => Ok(TextClass::GsmLong),
            "ucs2" => Ok(TextClass::Ucs2),
            "ucs2_long" => Ok(TextClass::Ucs2Long),
            other => Err(format!(
                "unknown text class {other:?} (gsm, gsm_long, ucs2, ucs2_long)"
            )),
        }
    }
}

impl fmt::Display for TextClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TextClass::Gsm => "gsm",
            TextClass::GsmLong => "gsm_long",
            TextClass::Ucs2 => "ucs2",
            TextClass::Ucs2Long => "ucs2_long",
        })
    }
}

/// Relative weights, written `name=weight,name=weight` (e.g. `otp=5,marketing=95`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "String",
    into = "String",
    bound(
        serialize = "T: Clone + fmt::Display",
        deserialize = "T: FromStr<Err = String> + PartialEq"
    )
)]
pub struct Weights<T> {
    entries: Vec<(T, u32)>,
    total: u64,
}

/// The traffic mix by kind.
pub type KindMix = Weights<Kind>;
/// The mix of text lengths and encodings.
pub type TextMix = Weights<TextClass>;

impl<T: Copy> Weights<T> {
    /// Picks an entry for a uniformly distributed `roll`.
    pub fn pick(&self, roll: u64) -> T {
        let mut x = roll % self.total.max(1);
        for (value, weight) in &self.entries {
            let w = u64::from(*weight);
            if x < w {
                return *value;
            }
            x -= w;
        }
        // Unreachable for a validated mix (total > 0); fall back to the first entry.
        self.entries[0].0
    }

    /// The entries with a non-zero weight.
    pub fn values(&self) -> impl Iterator<Item = T> + '_ {
        self.entries.iter().filter(|(_, w)| *w > 0).map(|(v, _)| *v)
    }
}

impl<T: FromStr<Err = String> + PartialEq> FromStr for Weights<T> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut entries: Vec<(T, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("expected name=weight, got {part:?}"))?;
            let value: T = name.parse()?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|e| format!("bad weight in {part:?}: {e}"))?;
            if entries.iter().any(|(v, _)| *v == value) {
                return Err(format!("{name:?} appears twice"));
            }
            entries.push((value, weight));
        }
        let total = entries.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err(format!("no positive weight in {s:?}"));
        }
        Ok(Weights { entries, total })
    }
}

impl<T: fmt::Display> fmt::Display for Weights<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (value, weight)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{value}={weight}")?;
        }
        Ok(())
    }
}

impl<T: FromStr<Err = String> + PartialEq> TryFrom<String> for Weights<T> {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl<T: fmt::Display> From<Weights<T>> for String {
    fn from(w: Weights<T>) -> String {
        w.to_string()
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A fixed arrival rate, whatever the responses do. Latency counts from the *intended*
    /// send time, so a stall shows as latency instead of as fewer requests (no coordinated
    /// omission).
    Open,
    /// `concurrency` clients, each sending its next request when the previous one answered.
    Closed,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Mode::Open),
            "closed" => Ok(Mode::Closed),
            other => Err(format!("unknown mode {other:?} (open, closed)")),
        }
    }
}

/// Step the open-loop rate up until the HTTP p99 (or the error ratio) breaks a bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    /// Added to the rate after each step that passed (messages/s).
    pub step: f64,
    /// Length of each step in seconds.
    pub every_s: f64,
    /// Highest rate tried.
    pub max_rate: f64,
    /// A step fails when its HTTP p99 (from the intended send time) is above this.
    pub p99_ms: f64,
    /// A step fails when more than this share of its messages were refused or failed.
    #[serde(default = "default_max_error_ratio")]
    pub max_error_ratio: f64,
}

fn default_max_error_ratio() -> f64 {
    0.01
}

/// One value per kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerKind<T> {
    /// For `otp`.
    pub otp: T,
    /// For `transactional`.
    pub transactional: T,
    /// For `marketing`.
    pub marketing: T,
}

impl<T> PerKind<T> {
    /// The value for `kind`.
    pub fn get(&self, kind: Kind) -> &T {
        match kind {
            Kind::Otp => &self.otp,
            Kind::Transactional => &self.transactional,
            Kind::Marketing => &self.marketing,
        }
    }
}

/// One part of a run; fields left out take the top-level [`Config`] values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Shown in the progress line and the report.
    pub name: String,
    /// Open or closed loop.
    pub mode: Option<Mode>,
    /// Open loop: messages per second.
    pub rate: Option<f64>,
    /// Closed loop: concurrent clients.
    pub concurrency: Option<usize>,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Stop after this many seconds.
    pub duration_s: Option<f64>,
    /// Traffic mix by kind.
    pub mix: Option<KindMix>,
    /// Text lengths and encodings.
    pub texts: Option<TextMix>,
    /// Messages per request; above 1 uses `POST /v1/messages/batch`.
    pub batch_size: Option<usize>,
    /// Whether this phase's latencies go into the report (`false` for a pre-fill).
    pub measure: Option<bool>,
    /// Open loop only: step the rate up until a bound breaks.
    pub ramp: Option<Ramp>,
}

/// A load-generator run. [`Config::default`] targets `smsgate demo` on its default address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Free text shown in the report (scenario files set it).
    pub description: String,
    /// Base URL of the gateway, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Request path; default `/v1/messages` (`/v1/messages/batch` with `batch_size` > 1).
    pub path: Option<String>,
    /// API keys, sent as `Authorization: Bearer <key>` (none: no Authorization header).
    pub keys: Vec<String>,
    /// Spread messages over the first N keys (default: all of them).
    pub accounts: Option<usize>,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// A file whose content is the request body, with `{{to}}`, `{{from}}`, `{{text}}`,
    /// `{{kind}}`, `{{token}}`, `{{seq}}` and `{{callback_url}}` replaced (JSON-escaped, or
    /// percent-encoded for a form content type). For HTTP APIs other than smsgate's.
    pub request_template: Option<PathBuf>,
    /// Content type of the templated body.
    pub template_content_type: String,
    /// JSON pointer to the message id in a 2xx answer (used for status polling).
    pub id_pointer: String,
    /// Per-request timeout in seconds.
    pub timeout_s: f64,
    /// Idle keep-alive connections kept per host.
    pub connections: usize,
    /// Most requests in flight at once (open loop waits for a slot; the wait counts as latency).
    pub max_inflight: usize,

    /// Open or closed loop.
    pub mode: Mode,
    /// Open loop: messages per second.
    pub rate: f64,
    /// Closed loop: concurrent clients.
    pub concurrency: usize,
    /// Stop after this many messages (per phase).
    pub count: Option<u64>,
    /// Stop after this many seconds (per phase). With neither bound a phase runs 10 s.
    pub duration_s: Option<f64>,
    /// Traffic mix by kind.
    pub mix: KindMix,
    /// Text lengths and encodings.
    pub texts: TextMix,
    /// Messages per request; above 1 uses `POST /v1/messages/batch` (`{"messages": [...]}`).
    pub batch_size: usize,
    /// Sender (`from`) per kind.
    pub senders: PerKind<String>,
    /// Destination pattern per kind: each `x` becomes a digit drawn per message.
    pub destinations: PerKind<String>,
    /// Draw destinations from this many distinct numbers per pattern (default: all).
    pub numbers: Option<u64>,
    /// Seed of the traffic draws (kind, text, number).
    pub seed: u64,
    /// Phases run one after another; none means one phase from the fields above.
    pub phases: Vec<Phase>,

    /// The SMSC simulator's HTTP side door (`smsc-sim --http`): after the run its
    /// `GET /submits` records give accept → submit_sm latency (it must keep records:
    /// `--max-records`, 1,000,000 by default; older ones are dropped and then count as missing).
    pub sim_url: Option<String>,
    /// Run a webhook receiver and pass its URL as `callback_url`: accept → final status.
    pub webhook: bool,
    /// Where the webhook receiver listens.
    pub webhook_listen: SocketAddr,
    /// The `callback_url` to send, when the gateway must reach the receiver by another
    /// address than `webhook_listen` (default `http://<listen address>/hook`).
    pub webhook_url: Option<String>,
    /// Poll `GET /v1/messages/{id}` for this share (0..=1) of accepted messages until final.
    pub poll_status: f64,
    /// Interval between status polls of one message (ms).
    pub poll_interval_ms: u64,
    /// After the last response, wait up to this long for submits and final statuses.
    pub drain_s: f64,
    /// Write `report.json` and `latency.svg` here.
    pub out: Option<PathBuf>,
    /// Print a progress line once a second on stderr.
    pub progress: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            description: String::new(),
            url: "http://127.0.0.1:8080".to_owned(),
            path: None,
            keys: vec!["demo-key".to_owned()],
            accounts: None,
            headers: Vec::new(),
            request_template: None,
            template_content_type: "application/json".to_owned(),
            id_pointer: "/id".to_owned(),
            timeout_s: 30.0,
            connections: 256,
            max_inflight: 1000,
            mode: Mode::Open,
            rate: 1000.0,
            concurrency: 32,
            count: None,
            duration_s: None,
            mix: "otp=5,transactional=20,marketing=75"
                .parse()
                .unwrap_or_else(|_| unreachable!("the default mix parses")),
            texts: "gsm=80,gsm_long=10,ucs2=10"
                .parse()
                .unwrap_or_else(|_| unreachable!("the default text mix parses")),
            batch_size: 1,
            senders: PerKind {
                otp: "ACME".to_owned(),
                transactional: "ACME".to_owned(),
                marketing: "ACME".to_owned(),
            },
            // GB (+44 7400) for OTP and transactional; marketing to NL (+31 6), whose rules
            // are the defaults (no consent register, no quiet hours), so it is not refused.
            destinations: PerKind {
                otp: "+447400xxxxxx".to_owned(),
                transactional: "+447400xxxxxx".to_owned(),
                marketing: "+3161xxxxxxx".to_owned(),
            },
            numbers: None,
            seed: 1,
            phases: Vec::new(),
            sim_url: None,
            webhook: true,
            webhook_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            webhook_url: None,
            poll_status: 0.0,
            poll_interval_ms: 50,
            drain_s: 10.0,
            out: None,
            progress: true,
        }
    }
}

/// Command-line overrides of the traffic shape: a value given here replaces the scenario's,
/// at the top level *and* in every phase.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// See [`Config::mode`].
    pub mode: Option<Mode>,
    /// See [`Config::rate`].
    pub rate: Option<f64>,
    /// See [`Config::concurrency`].
    pub concurrency: Option<usize>,
    /// See [`Config::count`].
    pub count: Option<u64>,
    /// See [`Config::duration_s`].
    pub duration_s: Option<f64>,
    /// See [`Config::mix`].
    pub mix: Option<KindMix>,
    /// See [`Config::texts`].
    pub texts: Option<TextMix>,
    /// See [`Config::batch_size`].
    pub batch_size: Option<usize>,
}

/// A phase with every field decided.
#[derive(Debug, Clone)]
pub(crate) struct PhasePlan {
    pub name: String,
    pub mode: Mode,
    pub rate: f64,
    pub concurrency: usize,
    pub count: Option<u64>,
    pub duration_s: Option<f64>,
    pub mix: KindMix,
    pub texts: TextMix,
    pub batch_size: usize,
    pub measure: bool,
    pub ramp: Option<Ramp>,
}

/// Default length of a phase given neither a count nor a duration.
const DEFAULT_DURATION_S: f64 = 10.0;

impl Config {
    /// Parses a scenario file's text.
    pub fn from_toml(text: &str) -> Result<Config, LoadgenError> {
        toml::from_str(text).map_err(|e| LoadgenError::Config(e.to_string()))
    }

    /// Reads a scenario file.
    pub fn load(path: &std::path::Path) -> Result<Config, LoadgenError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadgenError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        Config::from_toml(&text)
            .map_err(|e| LoadgenError::Config(format!("{}: {e}", path.display())))
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, o: &Overrides) {
        macro_rules! set {
            ($field:ident, $wrap:expr) => {
                if let Some(v) = &o.$field {
                    self.$field = $wrap(v.clone());
                    for phase in &mut self.phases {
                        phase.$field = None;
                    }
                }
            };
        }
        set!(mode, |v| v);
        set!(rate, |v| v);
        set!(concurrency, |v| v);
        set!(count, Some);
        set!(duration_s, Some);
        set!(mix, |v| v);
        set!(texts, |v| v);
        set!(batch_size, |v| v);
        // A count alone (or a duration alone) given on the command line bounds the run by itself.
        if o.count.is_some() && o.duration_s.is_none() {
            self.duration_s = None;
            for phase in &mut self.phases {
                phase.duration_s = None;
            }
        }
        if o.duration_s.is_some() && o.count.is_none() {
            self.count = None;
            for phase in &mut self.phases {
                phase.count = None;
            }
        }
    }

    /// The phases with every field decided, after checking them.
    pub(crate) fn plans(&self) -> Result<Vec<PhasePlan>, LoadgenError> {
        let defaults = [Phase {
            name: "main".to_owned(),
            ..Phase::default()
        }];
        let phases: &[Phase] = if self.phases.is_empty() {
            &defaults
        } else {
            &self.phases
        };
        phases.iter().map(|p| self.plan(p)).collect()
    }

    fn plan(&self, p: &Phase) -> Result<PhasePlan, LoadgenError> {
        let count = p.count.or(self.count);
        let duration_s = p.duration_s.or(self.duration_s);
        let plan = PhasePlan {
            name: p.name.clone(),
            mode: p.mode.unwrap_or(self.mode),
            rate: p.rate.unwrap_or(self.rate),
            concurrency: p.concurrency.unwrap_or(self.concurrency),
            duration_s: match (count, duration_s) {
                (None, None) => Some(DEFAULT_DURATION_S),
                (_, d) => d,
            },
            count,
            mix: p.mix.clone().unwrap_or_else(|| self.mix.clone()),
            texts: p.texts.clone().unwrap_or_else(|| self.texts.clone()),
            batch_size: p.batch_size.unwrap_or(self.batch_size).max(1),
            measure: p.measure.unwrap_or(true),
            ramp: p.ramp.clone(),
        };
        let bad = |why: String| Err(LoadgenError::Config(format!("phase {:?}: {why}", p.name)));
        if plan.mode == Mode::Open && !(plan.rate > 0.0 && plan.rate.is_finite()) {
            return bad(format!("rate must be above 0, got {}", plan.rate));
        }
        if plan.mode == Mode::Closed && plan.concurrency == 0 {
            return bad("concurrency must be at least 1".to_owned());
        }
        if let Some(d) = plan.duration_s
            && !(d > 0.0 && d.is_finite())
        {
            return bad(format!("duration_s must be above 0, got {d}"));
        }
        if plan.count == Some(0) {
            return bad("count must be at least 1".to_owned());
        }
        if plan.batch_size > 1000 {
            return bad(format!(
                "batch_size is at most 1000, got {}",
                plan.batch_size
            ));
        }
        if plan.batch_size > 1 && self.request_template.is_some() {
            return bad("a request template sends one message per request".to_owned());
        }
        if let Some(r) = &plan.ramp {
            if plan.mode != Mode::Open {
                return bad("a ramp needs mode = \"open\"".to_owned());
            }
            if !(r.step > 0.0 && r.every_s > 0.0 && r.max_rate >= plan.rate && r.p99_ms > 0.0) {
                return bad(
                    "ramp needs step > 0, every_s > 0, p99_ms > 0 and max_rate >= rate".to_owned(),
                );
            }
        }
        Ok(plan)
    }

    /// Checks everything that can be checked before sending.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let bad = |why: String| Err(LoadgenError::Config(why));
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad(format!(
                "url must start with http:// or https://, got {:?}",
                self.url
            ));
        }
        if let Some(n) = self.accounts
            && (n == 0 || n > self.keys.len())
        {
            return bad(format!(
                "accounts = {n} but {} key(s) given",
                self.keys.len()
            ));
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            return bad(format!("timeout_s must be above 0, got {}", self.timeout_s));
        }
        if self.max_inflight == 0 {
            return bad("max_inflight must be at least 1".to_owned());
        }
        if !(0.0..=1.0).contains(&self.poll_status) {
            return bad(format!(
                "poll_status is a share in 0..=1, got {}",
                self.poll_status
            ));
        }
        if !(self.drain_s >= 0.0 && self.drain_s.is_finite()) {
            return bad(format!("drain_s must be 0 or more, got {}", self.drain_s));
        }
        for kind in Kind::ALL {
            let pattern = self.destinations.get(kind);
            if !pattern.starts_with('+')
                || !pattern[1..].chars().all(|c| c.is_ascii_digit() || c == 'x')
            {
                return bad(format!(
                    "destination pattern for {kind} must be + then digits and x, got {pattern:?}"
                ));
            }
        }
        for h in &self.headers {
            if !h.contains(':') {
                return bad(format!("header must be `Name: value`, got {h:?}"));
            }
        }
        if let Some(sim) = &self.sim_url
            && !sim.starts_with("http://")
        {
            return bad(format!("sim_url must start with http://, got {sim:?}"));
        }
        self.plans().map(|_| ())
    }

    /// The number of keys messages are spread over.
    pub(crate) fn account_count(&self) -> usize {
        self.accounts.unwrap_or(self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_pick_and_print() {
        let mix: KindMix = "otp=1,marketing=3".parse().unwrap();
        assert_eq!(mix.pick(0), Kind::Otp);
        assert_eq!(mix.pick(1), Kind::Marketing);
        assert_eq!(mix.pick(4), Kind::Otp);
        assert_eq!(mix.to_string(), "otp=1,marketing=3");
        assert!("otp=0".parse::<KindMix>().is_err());
        assert!("sms=1".parse::<KindMix>().is_err());
        assert!("otp=1,otp=2".parse::<KindMix>().is_err());
    }

    #[test]
    fn scenario_toml_and_overrides() {
        let mut c = Config::from_toml(
            r#"
            url = "http://127.0.0.1:9000"
            mix = "otp=100"
            rate = 500.0
            [[phases]]
            name = "fill"
            mode = "closed"
            count = 10
            measure = false
            [[phases]]
            name = "otp"
            duration_s = 5.0
            "#,
        )
        .unwrap();
        let plans = c.plans().unwrap();
        assert_eq!(plans[0].mode, Mode::Closed);
        assert_eq!(plans[0].duration_s, None);
        assert_eq!(plans[1].rate, 500.0);
        c.apply(&Overrides {
            count: Some(3),
            ..Overrides::default()
        });
        let plans = c.plans().unwrap();
        assert_eq!(plans[1].count, Some(3));
        assert_eq!(plans[1].duration_s, None);
        assert!(Config::from_toml("rat = 1.0").is_err());
    }

    #[test]
    fn shipped_scenarios_load_and_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // gateway.toml is the gateway's config, not a scenario.
            if !name.ends_with(".toml") || name == "gateway.toml" {
                continue;
            }
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!config.description.is_empty(), "{name}");
            n += 1;
        }
        assert_eq!(n, 4);
    }
}
