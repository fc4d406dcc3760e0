//! Routing: which carriers may take a message, in order of preference, and
//! which of them takes it *now* (the first that has a bind up and is not
//! tripped by a route failure). A route is fixed when a message enters the
//! queue; the choice of carrier is made each time a bind asks for work, so
//! traffic fails over when a carrier goes down and returns when it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::{CarrierConfig, RouteConfig};
use crate::message::Kind;

/// Index of a route in [`Routing`] (the last one is the default route).
pub type RouteId = u16;

/// Index of a carrier in the configuration's order.
pub type CarrierId = usize;

/// A carrier's live state, shared by its binds and the scheduler.
#[derive(Debug)]
pub struct CarrierHealth {
    /// Carrier name.
    pub name: Arc<str>,
    binds_up: AtomicUsize,
    /// Milliseconds since `epoch` until which the carrier is skipped (0: not tripped).
    tripped_until_ms: AtomicU64,
    epoch: Instant,
}

impl CarrierHealth {
    fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            binds_up: AtomicUsize::new(0),
            tripped_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A bind came up (`true`) or went down.
    pub fn bind_changed(&self, up: bool) {
        if up {
            self.binds_up.fetch_add(1, Ordering::Relaxed);
        } else {
            self.binds_up.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Binds currently bound.
    pub fn binds_up(&self) -> usize {
        self.binds_up.load(Ordering::Relaxed)
    }

    /// Skips the carrier for `for_` (its routes fail over meanwhile).
    pub fn trip(&self, for_: Duration) {
        let until = self.epoch.elapsed() + for_;
        self.tripped_until_ms
            .store(until.as_millis() as u64, Ordering::Relaxed);
    }

    /// Up and not tripped: may take traffic.
    pub fn available(&self) -> bool {
        self.binds_up() > 0
            && self.tripped_until_ms.load(Ordering::Relaxed)
                <= self.epoch.elapsed().as_millis() as u64
    }
}

/// One compiled route.
#[derive(Debug)]
struct Route {
    country: Option<String>,
    prefix: Option<String>,
    kind: Option<Kind>,
    account: Option<String>,
    carriers: Vec<CarrierId>,
}

impl Route {
    fn matches(&self, kind: Kind, account: &str, country: &str, to: &str) -> bool {
        self.kind.is_none_or(|k| k == kind)
            && self.account.as_deref().is_none_or(|a| a == account)
            && self.country.as_deref().is_none_or(|c| c == country)
            && self.prefix.as_deref().is_none_or(|p| to.starts_with(p))
    }

    /// Longer prefixes first, then more fields given.
    fn specificity(&self) -> (usize, usize) {
        let fields = [
            self.country.is_some(),
            self.kind.is_some(),
            self.account.is_some(),
        ]
        .iter()
        .filter(|f| **f)
        .count();
        (self.prefix.as_ref().map_or(0, String::len), fields)
    }
}

/// The routes and the carriers' health.
#[derive(Debug)]
pub struct Routing {
    routes: Vec<Route>,
    carriers: Vec<Arc<CarrierHealth>>,
}

impl Routing {
    /// Compiles the configured routes; a default route (every carrier, in
    /// config order) catches what no route matches. Carrier names were
    /// checked when the config was loaded; unknown ones are skipped.
    pub fn new(carriers: &[CarrierConfig], routes: &[RouteConfig]) -> Self {
        let id_of = |name: &String| carriers.iter().position(|c| &c.name == name);
        let mut compiled: Vec<Route> = routes
            .iter()
            .map(|r| Route {
                country: r.country.clone(),
                prefix: r.prefix.clone(),
                kind: r.kind,
                account: r.account.clone(),
                carriers: r.carriers.iter().filter_map(id_of).collect(),
            })
            .collect();
        // Most specific first; equal ones keep their order in the file.
        compiled.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        compiled.push(Route {
            country: None,
            prefix: None,
            kind: None,
            account: None,
            carriers: (0..carriers.len()).collect(),
        });
        Self {
            routes: compiled,
            carriers: carriers
                .iter()
                .map(|c| Arc::new(CarrierHealth::new(&c.name)))
                .collect(),
        }
    }

    /// The route a message takes.
    pub fn route_of(&self, kind: Kind, account: &str, country: &str, to: &str) -> RouteId {
        let last = self.routes.len() - 1;
        let index = self.routes[..last]
            .iter()
            .position(|r| r.matches(kind, account, country, to))
            .unwrap_or(last);
        index as RouteId
    }

    /// The carrier that takes the route's traffic now: the first available
    /// one in its list, `None` when none is.
    pub fn carrier_for(&self, route: RouteId) -> Option<CarrierId> {
        self.routes
            .get(route as usize)?
            .carriers
            .iter()
            .copied()
            .find(|&c| self.carriers[c].available())
    }

    /// Whether `carrier` takes `route`'s traffic now.
    pub fn serves(&self, carrier: CarrierId, route: RouteId) -> bool {
        self.carrier_for(route) == Some(carrier)
    }

    /// A carrier's health handle.
    pub fn health(&self, carrier: CarrierId) -> &Arc<CarrierHealth> {
        &self.carriers[carrier]
    }

    /// Every carrier's health, in config order.
    pub fn carriers(&self) -> &[Arc<CarrierHealth>] {
        &self.carriers
    }

    /// Number of routes (including the default one).
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrier(name: &str) -> CarrierConfig {
        let text = format!(
            "name = \"{name}\"\nurl = \"smpp://127.0.0.1:1\"\nsystem_id = \"x\"\npassword = \"y\"\n"
        );
        toml::from_str(&text).expect("carrier config")
    }

    fn route(text: &str) -> RouteConfig {
        toml::from_str(text).expect("route config")
    }

    fn routing() -> Routing {
        Routing::new(
            &[carrier("a"), carrier("b"), carrier("c")],
            &[
                route("country = \"GB\"\ncarriers = [\"b\", \"c\"]"),
                route("prefix = \"+4474\"\ncarriers = [\"c\"]"),
                route("kind = \"otp\"\ncountry = \"GB\"\ncarriers = [\"a\"]"),
            ],
        )
    }

    #[test]
    fn the_most_specific_route_wins_and_the_default_catches_the_rest() {
        let r = routing();
        let route = |kind, country, to| r.route_of(kind, "acct", country, to);
        let gb = route(Kind::Marketing, "GB", "+447900000000");
        let gb_74 = route(Kind::Marketing, "GB", "+447400000000");
        let gb_otp = route(Kind::Otp, "GB", "+447900000000");
        let fr = route(Kind::Otp, "FR", "+33612345678");
        for c in r.carriers() {
            c.bind_changed(true);
        }
        assert_eq!(
            r.carrier_for(gb_74),
            Some(2),
            "the prefix beats the country"
        );
        assert_eq!(
            r.carrier_for(gb_otp),
            Some(0),
            "kind + country beats country"
        );
        assert_eq!(r.carrier_for(gb), Some(1));
        assert_eq!(
            r.carrier_for(fr),
            Some(0),
            "default: every carrier in order"
        );
        assert_eq!(fr as usize, r.route_count() - 1);
    }

    #[test]
    fn traffic_fails_over_while_a_carrier_is_down_or_tripped_and_returns() {
        let r = routing();
        let gb = r.route_of(Kind::Marketing, "acct", "GB", "+447900000000");
        assert_eq!(r.carrier_for(gb), None, "no bind up anywhere");
        r.health(2).bind_changed(true);
        assert_eq!(r.carrier_for(gb), Some(2), "the secondary while b is down");
        r.health(1).bind_changed(true);
        assert!(r.serves(1, gb) && !r.serves(2, gb), "back to the primary");
        r.health(1).trip(Duration::from_secs(60));
        assert_eq!(r.carrier_for(gb), Some(2), "tripped by a route failure");
        r.health(1).trip(Duration::ZERO);
        assert_eq!(r.carrier_for(gb), Some(1));
    }
}
