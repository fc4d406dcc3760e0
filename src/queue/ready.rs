//! The scheduler's view of ready messages: per kind (strict priority
//! between kinds), per account (weighted round robin within a kind), per
//! route (so a carrier only ever looks at traffic it may take).
//!
//! Only a bounded window of each account's queue is in memory; the rest
//! waits in the store and is paged in, oldest first, as the window drains.
//! The store's `ready` index orders an account's messages by id; `cursor`
//! is the highest id brought into memory, so a page is "the next ids after
//! the cursor". Ids are generated in increasing order but committed in
//! group batches, so a message can become visible after a page already read
//! past its id: those are tracked while a page is loading and the cursor is
//! moved back below them, so nothing is skipped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::carrier::route::RouteId;
use crate::message::{Kind, MessageId};

/// A ready message as the scheduler needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The message.
    pub id: MessageId,
    /// Its route.
    pub route: RouteId,
    /// Never submitted after this.
    pub expires_at: DateTime<Utc>,
    /// When it became ready (time-in-queue starts here).
    pub ready_at: DateTime<Utc>,
}

/// A page the queue should read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PageRequest {
    /// Kind of the account queue.
    pub kind: Kind,
    /// Account.
    pub account: Arc<str>,
    /// Read ids after this one.
    pub after: Option<MessageId>,
    /// At most this many.
    pub limit: usize,
}

/// Where an inserted message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Into the in-memory window.
    Window,
    /// Left in the store, to be paged in later.
    Disk,
}

/// One account's ready messages of one kind.
#[derive(Debug)]
struct AccountQueue {
    account: Arc<str>,
    weight: u32,
    lanes: Vec<(RouteId, VecDeque<Entry>)>,
    windowed: usize,
    on_disk: usize,
    cursor: Option<MessageId>,
    loading: bool,
    /// Read from the start after the page being loaded (adopted messages).
    rescan: bool,
    appended_while_loading: Vec<MessageId>,
    /// Messages served in the account's current round-robin turn.
    served: u32,
}

impl AccountQueue {
    fn new(account: Arc<str>, weight: u32) -> Self {
        Self {
            account,
            weight: weight.max(1),
            lanes: Vec::new(),
            windowed: 0,
            on_disk: 0,
            cursor: None,
            loading: false,
            rescan: false,
            appended_while_loading: Vec::new(),
            served: 0,
        }
    }

    fn spilled(&self) -> bool {
        self.on_disk > 0 || self.loading
    }

    fn lane(&mut self, route: RouteId) -> &mut VecDeque<Entry> {
        let i = match self.lanes.iter().position(|(r, _)| *r == route) {
            Some(i) => i,
            None => {
                self.lanes.push((route, VecDeque::new()));
                self.lanes.len() - 1
            }
        };
        &mut self.lanes[i].1
    }

    fn push(&mut self, entry: Entry, front: bool) {
        let lane = self.lane(entry.route);
        if front {
            lane.push_front(entry);
        } else {
            lane.push_back(entry);
        }
        self.windowed += 1;
    }
}

/// Ready messages of one kind.
#[derive(Debug, Default)]
struct KindQueue {
    accounts: Vec<AccountQueue>,
    /// Round-robin position.
    next: usize,
}

/// Every ready message the scheduler knows of, and those waiting out a retry delay.
#[derive(Debug)]
pub(crate) struct ReadySet {
    kinds: [KindQueue; 3],
    weights: HashMap<String, u32>,
    /// Most messages in memory per account queue (`usize::MAX`: never page).
    window: usize,
    page_size: usize,
    /// Retries waiting for their backoff: (due, id) → (kind, account, entry).
    delayed: BTreeMap<(Instant, MessageId), (Kind, Arc<str>, Entry)>,
}

impl ReadySet {
    /// An empty set; `window` bounds each account queue's memory (use
    /// `usize::MAX` for a store that cannot page).
    pub(crate) fn new(weights: HashMap<String, u32>, window: usize, page_size: usize) -> Self {
        Self {
            kinds: Default::default(),
            weights,
            window,
            page_size: page_size.max(1),
            delayed: BTreeMap::new(),
        }
    }

    fn queue(&mut self, kind: Kind, account: &str) -> &mut AccountQueue {
        let kq = &mut self.kinds[kind.index()];
        let i = match kq.accounts.iter().position(|a| &*a.account == account) {
            Some(i) => i,
            None => {
                let weight = self.weights.get(account).copied().unwrap_or(1);
                kq.accounts
                    .push(AccountQueue::new(Arc::from(account), weight));
                kq.accounts.len() - 1
            }
        };
        &mut kq.accounts[i]
    }

    /// Messages the store holds that are not in memory (after a restart).
    pub(crate) fn add_on_disk(&mut self, kind: Kind, account: &str, count: usize) {
        self.queue(kind, account).on_disk += count;
    }

    /// Messages another node left that are now in the store under any id:
    /// the next page reads the account's queue from its start again.
    pub(crate) fn adopted(&mut self, kind: Kind, account: &str, count: usize) {
        let q = self.queue(kind, account);
        q.on_disk += count;
        if q.loading {
            q.rescan = true;
        } else {
            q.cursor = None;
        }
    }

    /// A message became ready (accepted, released from the schedule). Goes
    /// into memory unless the account's queue already overflows to the store
    /// and the message is newer than what was paged in.
    pub(crate) fn insert(&mut self, kind: Kind, account: &str, entry: Entry) -> Placement {
        let window = self.window;
        let q = self.queue(kind, account);
        let behind_cursor = q.cursor.is_some_and(|c| entry.id <= c);
        if behind_cursor || (!q.spilled() && q.windowed < window) {
            q.push(entry, false);
            q.cursor = Some(q.cursor.map_or(entry.id, |c| c.max(entry.id)));
            return Placement::Window;
        }
        q.on_disk += 1;
        if q.loading {
            q.appended_while_loading.push(entry.id);
        }
        Placement::Disk
    }

    /// A leased message comes back for another attempt: first in its lane.
    pub(crate) fn requeue(&mut self, kind: Kind, account: &str, entry: Entry) {
        self.queue(kind, account).push(entry, true);
    }

    /// A message comes back after a retry delay.
    pub(crate) fn delay(&mut self, kind: Kind, account: &str, entry: Entry, until: Instant) {
        self.delayed
            .insert((until, entry.id), (kind, Arc::from(account), entry));
    }

    /// Moves retries whose delay is over back to the front of their lane;
    /// returns how many, and when the next one is due.
    pub(crate) fn release_delayed(&mut self, now: Instant) -> (usize, Option<Instant>) {
        let mut released = 0;
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (kind, account, e) = entry.remove();
            self.requeue(kind, &account, e);
            released += 1;
        }
        (released, self.delayed.keys().next().map(|(at, _)| *at))
    }

    /// The next message for a carrier: the highest kind first; within a kind
    /// the accounts take turns (`weight` messages each); only routes
    /// `serves` accepts are looked at. Expired messages met on the way are
    /// removed and returned; pages to read are returned too.
    pub(crate) fn take(&mut self, serves: impl Fn(RouteId) -> bool, now: DateTime<Utc>) -> Taken {
        let mut taken = Taken::default();
        for kind in Kind::ALL {
            let kq = &mut self.kinds[kind.index()];
            let n = kq.accounts.len();
            for step in 0..n {
                let i = (kq.next + step) % n;
                let q = &mut kq.accounts[i];
                let Some(entry) = pop_fresh(q, &serves, now, &mut taken.expired) else {
                    // Nothing here for this carrier: what is in memory may all
                    // wait for a carrier that is down, so read on (up to a few
                    // windows) to find traffic this one can take.
                    request_page(q, kind, self.window, self.page_size, true, &mut taken.pages);
                    continue;
                };
                request_page(
                    q,
                    kind,
                    self.window,
                    self.page_size,
                    false,
                    &mut taken.pages,
                );
                q.served += 1;
                if q.served >= q.weight {
                    q.served = 0;
                    kq.next = (i + 1) % n;
                } else {
                    kq.next = i;
                }
                taken.entry = Some((kind, entry));
                return taken;
            }
        }
        taken
    }

    /// Removes expired messages from every window (a sweep for queues no
    /// carrier is taking from) and returns their ids.
    pub(crate) fn sweep_expired(&mut self, now: DateTime<Utc>) -> Vec<MessageId> {
        let mut expired = Vec::new();
        for kq in &mut self.kinds {
            for q in &mut kq.accounts {
                for (_, lane) in &mut q.lanes {
                    lane.retain(|e| {
                        let fresh = e.expires_at > now;
                        if !fresh {
                            expired.push(e.id);
                        }
                        fresh
                    });
                }
                q.windowed = q.lanes.iter().map(|(_, l)| l.len()).sum();
            }
        }
        let stale: Vec<_> = self
            .delayed
            .iter()
            .filter(|(_, (_, _, e))| e.expires_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.delayed.remove(&k);
            expired.push(k.1);
        }
        expired
    }

    /// A page came back from the store: `loaded` are the messages now in
    /// memory, `last` the highest id the read went through (`None`: nothing
    /// after the cursor), `exhausted` whether the read reached the end.
    pub(crate) fn paged(
        &mut self,
        kind: Kind,
        account: &str,
        loaded: Vec<Entry>,
        last: Option<MessageId>,
        exhausted: bool,
    ) {
        let q = self.queue(kind, account);
        q.loading = false;
        let loaded_ids: Vec<MessageId> = loaded.iter().map(|e| e.id).collect();
        q.on_disk = q.on_disk.saturating_sub(loaded.len());
        for e in loaded {
            q.push(e, false);
        }
        let mut cursor = match (q.cursor, last) {
            (Some(c), Some(l)) => Some(c.max(l)),
            (c, l) => c.or(l),
        };
        // Appended while the read ran and not in it: still on disk.
        let unseen: Vec<MessageId> = q
            .appended_while_loading
            .drain(..)
            .filter(|id| !loaded_ids.contains(id))
            .collect();
        // Those with an id the read went past: keep the cursor below them so
        // the next page finds them.
        if let Some(first) = unseen
            .iter()
            .filter(|id| cursor.is_some_and(|c| **id <= c))
            .min()
        {
            cursor = first.predecessor();
        }
        let rescan = std::mem::take(&mut q.rescan);
        q.cursor = if rescan { None } else { cursor };
        if exhausted && !rescan {
            // The read saw the end: only what it could not see is left.
            q.on_disk = unseen.len();
        }
    }

    /// A page read failed: it will be asked for again.
    pub(crate) fn page_failed(&mut self, kind: Kind, account: &str) {
        let q = self.queue(kind, account);
        q.loading = false;
        q.appended_while_loading.clear();
    }

    /// Messages waiting per kind (in memory, in the store, in retry delay).
    pub(crate) fn depths(&self) -> [usize; 3] {
        let mut d = [0; 3];
        for (k, kq) in self.kinds.iter().enumerate() {
            d[k] = kq.accounts.iter().map(|q| q.windowed + q.on_disk).sum();
        }
        for (kind, _, _) in self.delayed.values() {
            d[kind.index()] += 1;
        }
        d
    }

    /// In-memory ready messages per kind and route.
    pub(crate) fn windowed_by_route(&self) -> Vec<(Kind, RouteId, usize)> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            for q in &self.kinds[kind.index()].accounts {
                for (route, lane) in &q.lanes {
                    if !lane.is_empty() {
                        out.push((kind, *route, lane.len()));
                    }
                }
            }
        }
        out
    }
}

/// What [`ReadySet::take`] found.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// The message to send, with its kind.
    pub entry: Option<(Kind, Entry)>,
    /// Expired messages removed on the way.
    pub expired: Vec<MessageId>,
    /// Pages to read from the store.
    pub pages: Vec<PageRequest>,
}

/// Pops the first unexpired entry of a lane the carrier serves.
fn pop_fresh(
    q: &mut AccountQueue,
    serves: &impl Fn(RouteId) -> bool,
    now: DateTime<Utc>,
    expired: &mut Vec<MessageId>,
) -> Option<Entry> {
    for (route, lane) in &mut q.lanes {
        if !serves(*route) {
            continue;
        }
        while let Some(e) = lane.pop_front() {
            q.windowed -= 1;
            if e.expires_at > now {
                return Some(e);
            }
            expired.push(e.id);
        }
    }
    None
}

/// Most windows an account queue may hold when its in-memory messages all
/// wait for carriers that are down.
const STUCK_WINDOWS: usize = 4;

/// Asks for the next page when the window is running low (or, when the
/// carrier found nothing it may take, until [`STUCK_WINDOWS`] are held).
fn request_page(
    q: &mut AccountQueue,
    kind: Kind,
    window: usize,
    page_size: usize,
    starved: bool,
    pages: &mut Vec<PageRequest>,
) {
    let limit = if starved {
        window.saturating_mul(STUCK_WINDOWS)
    } else {
        window / 2
    };
    if q.loading || q.on_disk == 0 || q.windowed >= limit.max(1) {
        return;
    }
    q.loading = true;
    pages.push(PageRequest {
        kind,
        account: q.account.clone(),
        after: q.cursor,
        limit: page_size
            .min(
                window
                    .saturating_mul(STUCK_WINDOWS)
                    .saturating_sub(q.windowed),
            )
            .max(1),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(route: RouteId) -> Entry {
        let now = Utc::now();
        Entry {
            id: MessageId::generate(),
            route,
            expires_at: now + chrono::Duration::hours(1),
            ready_at: now,
        }
    }

    fn set(window: usize) -> ReadySet {
        ReadySet::new(HashMap::from([("big".to_owned(), 1)]), window, 4)
    }

    fn next(r: &mut ReadySet) -> Option<(Kind, MessageId)> {
        r.take(|_| true, Utc::now()).entry.map(|(k, e)| (k, e.id))
    }

    #[test]
    fn kinds_are_strict_and_fifo_within_an_account() {
        let mut r = set(usize::MAX);
        let m1 = entry(0);
        let m2 = entry(0);
        let o = entry(0);
        r.insert(Kind::Marketing, "a", m1);
        r.insert(Kind::Marketing, "a", m2);
        r.insert(Kind::Otp, "a", o);
        assert_eq!(next(&mut r), Some((Kind::Otp, o.id)));
        assert_eq!(next(&mut r), Some((Kind::Marketing, m1.id)));
        assert_eq!(next(&mut r), Some((Kind::Marketing, m2.id)));
        assert_eq!(next(&mut r), None);
    }

    #[test]
    fn accounts_take_turns_by_weight() {
        let mut r = ReadySet::new(HashMap::from([("a".to_owned(), 2)]), usize::MAX, 4);
        let a: Vec<Entry> = (0..6).map(|_| entry(0)).collect();
        let b: Vec<Entry> = (0..3).map(|_| entry(0)).collect();
        for e in &a {
            r.insert(Kind::Marketing, "a", *e);
        }
        for e in &b {
            r.insert(Kind::Marketing, "b", *e);
        }
        let who: String = (0..9)
            .map(|_| {
                let id = next(&mut r).expect("one").1;
                if a.iter().any(|e| e.id == id) {
                    'a'
                } else {
                    'b'
                }
            })
            .collect();
        assert_eq!(who, "aabaabaab", "a (weight 2) gets two turns per b's one");
    }

    #[test]
    fn a_carrier_only_sees_the_routes_it_serves() {
        let mut r = set(usize::MAX);
        let to_1 = entry(1);
        let to_0 = entry(0);
        r.insert(Kind::Marketing, "a", to_1);
        r.insert(Kind::Marketing, "a", to_0);
        let t = r.take(|route| route == 0, Utc::now());
        assert_eq!(
            t.entry.map(|(_, e)| e.id),
            Some(to_0.id),
            "no head-of-line blocking"
        );
        assert!(r.take(|route| route == 0, Utc::now()).entry.is_none());
        assert_eq!(next(&mut r), Some((Kind::Marketing, to_1.id)));
    }

    #[test]
    fn expired_messages_are_never_taken() {
        let mut r = set(usize::MAX);
        let mut stale = entry(0);
        stale.expires_at = Utc::now() - chrono::Duration::seconds(1);
        let fresh = entry(0);
        r.insert(Kind::Otp, "a", stale);
        r.insert(Kind::Otp, "a", fresh);
        let t = r.take(|_| true, Utc::now());
        assert_eq!(t.expired, vec![stale.id]);
        assert_eq!(t.entry.map(|(_, e)| e.id), Some(fresh.id));
        let mut other = entry(0);
        other.expires_at = Utc::now() - chrono::Duration::seconds(1);
        r.insert(Kind::Otp, "a", other);
        assert_eq!(r.sweep_expired(Utc::now()), vec![other.id]);
        assert_eq!(r.depths(), [0, 0, 0]);
    }

    #[test]
    fn retries_wait_out_their_delay_then_go_first() {
        let mut r = set(usize::MAX);
        let first = entry(0);
        let retry = entry(0);
        r.insert(Kind::Transactional, "a", first);
        let now = Instant::now();
        r.delay(
            Kind::Transactional,
            "a",
            retry,
            now + std::time::Duration::from_secs(1),
        );
        assert_eq!(r.depths()[1], 2);
        assert_eq!(r.release_delayed(now).0, 0);
        let (released, next_due) = r.release_delayed(now + std::time::Duration::from_secs(2));
        assert_eq!((released, next_due), (1, None));
        assert_eq!(next(&mut r), Some((Kind::Transactional, retry.id)));
    }

    #[test]
    fn an_overflowing_queue_spills_to_the_store_and_pages_back_in_order() {
        let mut r = set(4);
        let all: Vec<Entry> = (0..10).map(|_| entry(0)).collect();
        let placed: Vec<Placement> = all
            .iter()
            .map(|e| r.insert(Kind::Marketing, "big", *e))
            .collect();
        assert_eq!(placed[..4], [Placement::Window; 4]);
        assert_eq!(placed[4..], [Placement::Disk; 6]);
        assert_eq!(r.depths()[2], 10, "depth counts memory and store");
        // Draining to half the window asks for the page after the cursor.
        let mut order = Vec::new();
        let mut pages = Vec::new();
        for _ in 0..3 {
            let t = r.take(|_| true, Utc::now());
            order.push(t.entry.expect("one").1.id);
            pages.extend(t.pages);
        }
        assert_eq!(pages.len(), 1, "one page at a time: {pages:?}");
        assert_eq!(pages[0].after, Some(all[3].id));
        assert!(pages[0].limit <= 4);
        // The store returns the next ids after the cursor.
        r.paged(
            Kind::Marketing,
            "big",
            all[4..7].to_vec(),
            Some(all[6].id),
            false,
        );
        while let Some((_, e)) = r.take(|_| true, Utc::now()).entry {
            order.push(e.id);
            if order.len() == 7 {
                break;
            }
        }
        let expected: Vec<MessageId> = all[..7].iter().map(|e| e.id).collect();
        assert_eq!(order, expected, "oldest first across the page boundary");
        assert_eq!(r.depths()[2], 3, "three still in the store");
    }

    #[test]
    fn a_late_commit_below_the_cursor_is_not_skipped() {
        let mut r = set(2);
        let ids: Vec<Entry> = (0..6).map(|_| entry(0)).collect();
        r.insert(Kind::Marketing, "big", ids[0]);
        r.insert(Kind::Marketing, "big", ids[1]);
        r.insert(Kind::Marketing, "big", ids[3]); // disk
        // Drain the window: a page is requested after ids[1].
        let mut pages = Vec::new();
        for _ in 0..2 {
            pages.extend(r.take(|_| true, Utc::now()).pages);
        }
        assert_eq!(pages.len(), 1);
        // ids[2] commits while the page loads; the page only saw ids[3].
        assert_eq!(r.insert(Kind::Marketing, "big", ids[2]), Placement::Disk);
        r.paged(Kind::Marketing, "big", vec![ids[3]], Some(ids[3].id), true);
        assert_eq!(r.depths()[2], 2, "ids[3] in memory, ids[2] still on disk");
        let t = r.take(|_| true, Utc::now());
        assert_eq!(t.entry.expect("one").1.id, ids[3].id);
        assert_eq!(t.pages.len(), 1);
        assert!(
            t.pages[0].after < Some(ids[2].id),
            "the next page starts below the late one"
        );
    }

    #[test]
    fn a_window_full_of_stuck_traffic_does_not_hide_what_a_carrier_can_take() {
        let mut r = set(2);
        // Two messages for route 1 (its carrier is down) fill the window;
        // one for route 0 waits on disk.
        r.insert(Kind::Marketing, "big", entry(1));
        r.insert(Kind::Marketing, "big", entry(1));
        let waiting = entry(0);
        assert_eq!(r.insert(Kind::Marketing, "big", waiting), Placement::Disk);
        let t = r.take(|route| route == 0, Utc::now());
        assert!(t.entry.is_none());
        assert_eq!(t.pages.len(), 1, "reads on although the window is full");
        r.paged(
            Kind::Marketing,
            "big",
            vec![waiting],
            Some(waiting.id),
            true,
        );
        let t = r.take(|route| route == 0, Utc::now());
        assert_eq!(t.entry.map(|(_, e)| e.id), Some(waiting.id));
    }
}
