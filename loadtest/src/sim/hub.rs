//! The hub knows every open session and routes what the SMSC originates (receipts and MO
//! messages) to bound receiver/transceiver sessions of the right system_id.
//!
//! Receipts with nowhere to go wait in a per-system_id queue and leave as soon as a session
//! binds or a deliver_sm_resp frees a window slot. A receipt stays "in flight" on its session
//! until its deliver_sm_resp arrives; if the session dies first, the receipt goes back to the
//! front of the queue, so the simulator never loses one.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use rusmpp::{Command, pdus::DeliverSm};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{error::SimError, receipts::Receipt};

/// Identifies one TCP connection for the lifetime of the simulator.
pub(crate) type SessionId = u64;

/// Something the SMSC originates on a session; encoded by the session's writer.
#[derive(Debug)]
pub(crate) enum Push {
    /// A delivery receipt (deliver_sm built at send time, so its done date is accurate).
    Receipt { seq: u32, receipt: Arc<Receipt> },
    /// A ready-made deliver_sm (mobile-originated message).
    Deliver { seq: u32, pdu: Box<DeliverSm> },
    /// A bind_resp, queued here so it always precedes the receipts that follow the bind.
    Command(Box<Command>),
}

/// The answer to an MO deliver_sm.
pub(crate) type MoAck = oneshot::Receiver<Result<(), SimError>>;

#[derive(Debug)]
enum Inflight {
    Receipt(Arc<Receipt>),
    Mo(oneshot::Sender<Result<(), SimError>>),
}

/// What a deliver_sm_resp acknowledged.
#[derive(Debug)]
pub(crate) enum Acked {
    /// A receipt; `refused` when the status was not ESME_ROK (the caller retries it later).
    Receipt {
        receipt: Arc<Receipt>,
        refused: bool,
    },
    /// An MO message (its waiter has been told).
    Mo,
    /// Nothing we sent (late, duplicate or bogus sequence number).
    Unknown,
}

/// A new session's handles.
#[derive(Debug)]
pub(crate) struct Registration {
    pub id: SessionId,
    pub push_rx: mpsc::UnboundedReceiver<Push>,
    /// Cancelled by `drop_all`: the session must close at once, without unbind.
    pub kill: CancellationToken,
}

#[derive(Debug)]
struct Peer {
    push: mpsc::UnboundedSender<Push>,
    kill: CancellationToken,
    /// Bound (any mode) and not unbound yet.
    bound: bool,
    /// system_id, once bound as receiver or transceiver.
    receives_for: Option<String>,
    next_seq: u32,
    inflight: HashMap<u32, Inflight>,
}

impl Peer {
    fn next_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        // Sequence numbers run 1..=0x7FFFFFFF and wrap.
        self.next_seq = if seq >= 0x7FFF_FFFF { 1 } else { seq + 1 };
        seq
    }
}

#[derive(Debug, Default)]
struct Route {
    receivers: Vec<SessionId>,
    cursor: usize,
    pending: VecDeque<Arc<Receipt>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: SessionId,
    sessions: HashMap<SessionId, Peer>,
    routes: HashMap<String, Route>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Hub {
    window: usize,
    /// Sessions with `bound` set; only changed under the lock, so binds and drops agree.
    binds_active: AtomicU64,
    // A std mutex: every critical section is a few map operations and channel sends, never an
    // await, and one lock keeps session, window and queue state consistent with each other.
    state: Mutex<State>,
}

impl Hub {
    pub(crate) fn new(window: usize) -> Hub {
        Hub {
            window: window.max(1),
            binds_active: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection.
    pub(crate) fn register(&self) -> Registration {
        let (push, push_rx) = mpsc::unbounded_channel();
        let kill = CancellationToken::new();
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.sessions.insert(
            id,
            Peer {
                push,
                kill: kill.clone(),
                bound: false,
                receives_for: None,
                next_seq: 1,
                inflight: HashMap::new(),
            },
        );
        Registration { id, push_rx, kill }
    }

    /// Records a successful bind.
    pub(crate) fn mark_bound(&self, id: SessionId) {
        let mut state = self.lock();
        if let Some(peer) = state.sessions.get_mut(&id).filter(|p| !p.bound) {
            peer.bound = true;
            self.binds_active.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records an unbind.
    pub(crate) fn mark_unbound(&self, id: SessionId) {
        let mut state = self.lock();
        if let Some(peer) = state.sessions.get_mut(&id).filter(|p| p.bound) {
            peer.bound = false;
            self.binds_active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sessions bound right now.
    pub(crate) fn binds_active(&self) -> u64 {
        self.binds_active.load(Ordering::Relaxed)
    }

    /// Marks a session as a receiver of `system_id`'s receipts and MO, sends `bind_resp`, then
    /// whatever is waiting.
    pub(crate) fn bind_receiver(&self, id: SessionId, system_id: &str, bind_resp: Command) {
        let mut guard = self.lock();
        let State {
            sessions, routes, ..
        } = &mut *guard;
        let Some(peer) = sessions.get_mut(&id) else {
            return;
        };
        if peer.push.send(Push::Command(Box::new(bind_resp))).is_err() {
            return;
        }
        peer.receives_for = Some(system_id.to_owned());
        let route = routes.entry(system_id.to_owned()).or_default();
        route.receivers.push(id);
        fill(sessions, route, self.window);
    }

    /// A sequence number for a PDU the SMSC originates on this session (e.g. unbind).
    pub(crate) fn next_seq(&self, id: SessionId) -> Option<u32> {
        self.lock().sessions.get_mut(&id).map(Peer::next_seq)
    }

    /// Routes receipts that just became due.
    pub(crate) fn dispatch(&self, receipts: impl Iterator<Item = Arc<Receipt>>) {
        let mut guard = self.lock();
        let State {
            sessions, routes, ..
        } = &mut *guard;
        for receipt in receipts {
            let route = match routes.get_mut(receipt.system_id.as_str()) {
                Some(route) => route,
                None => routes.entry(receipt.system_id.clone()).or_default(),
            };
            if route.pending.is_empty() {
                if let Err(receipt) = try_send(sessions, route, receipt, self.window) {
                    route.pending.push_back(receipt);
                }
            } else {
                // Keep arrival order behind what is already waiting.
                route.pending.push_back(receipt);
                fill(sessions, route, self.window);
            }
        }
    }

    /// Handles a deliver_sm_resp.
    pub(crate) fn ack(&self, id: SessionId, seq: u32, status: u32) -> Acked {
        let mut guard = self.lock();
        let State {
            sessions, routes, ..
        } = &mut *guard;
        let Some(peer) = sessions.get_mut(&id) else {
            return Acked::Unknown;
        };
        let acked = match peer.inflight.remove(&seq) {
            Some(Inflight::Receipt(receipt)) => Acked::Receipt {
                receipt,
                refused: status != 0,
            },
            Some(Inflight::Mo(waiter)) => {
                let _ = waiter.send(if status == 0 {
                    Ok(())
                } else {
                    Err(SimError::Refused(status))
                });
                Acked::Mo
            }
            None => Acked::Unknown,
        };
        if let Some(route) = peer
            .receives_for
            .as_deref()
            .and_then(|system_id| routes.get_mut(system_id))
        {
            fill(sessions, route, self.window);
        }
        acked
    }

    /// Removes a session; its unacknowledged receipts go back to their queue. Returns whether
    /// it was still registered (`drop_all` may have removed it already).
    pub(crate) fn unregister(&self, id: SessionId) -> bool {
        let mut guard = self.lock();
        self.remove(&mut guard, id)
    }

    /// Abruptly closes every session (no unbind). Returns how many there were.
    pub(crate) fn drop_all(&self) -> usize {
        let mut guard = self.lock();
        let ids: Vec<SessionId> = guard.sessions.keys().copied().collect();
        for &id in &ids {
            if let Some(peer) = guard.sessions.get(&id) {
                peer.kill.cancel();
            }
            self.remove(&mut guard, id);
        }
        ids.len()
    }

    /// Sends an MO deliver_sm on a receiver of `system_id` (round robin; MO ignores the window).
    pub(crate) fn send_mo(&self, system_id: &str, pdu: DeliverSm) -> Result<MoAck, SimError> {
        let mut guard = self.lock();
        let State {
            sessions, routes, ..
        } = &mut *guard;
        let no_receiver = || SimError::NoReceiver(system_id.to_owned());
        let route = routes.get_mut(system_id).ok_or_else(no_receiver)?;
        let n = route.receivers.len();
        if n == 0 {
            return Err(no_receiver());
        }
        let id = route.receivers[route.cursor % n];
        route.cursor = route.cursor.wrapping_add(1);
        let peer = sessions.get_mut(&id).ok_or_else(no_receiver)?;
        let seq = peer.next_seq();
        let (tx, rx) = oneshot::channel();
        peer.push
            .send(Push::Deliver {
                seq,
                pdu: Box::new(pdu),
            })
            .map_err(|_| SimError::SessionClosed)?;
        peer.inflight.insert(seq, Inflight::Mo(tx));
        Ok(rx)
    }

    /// Forgets a session: fails its MO waiters and re-queues its unacknowledged receipts.
    fn remove(&self, state: &mut State, id: SessionId) -> bool {
        let Some(peer) = state.sessions.remove(&id) else {
            return false;
        };
        if peer.bound {
            self.binds_active.fetch_sub(1, Ordering::Relaxed);
        }
        let mut unacked: Vec<(u32, Arc<Receipt>)> = Vec::new();
        for (seq, inflight) in peer.inflight {
            match inflight {
                Inflight::Receipt(receipt) => unacked.push((seq, receipt)),
                Inflight::Mo(waiter) => {
                    let _ = waiter.send(Err(SimError::SessionClosed));
                }
            }
        }
        if let Some(system_id) = peer.receives_for {
            requeue(state, system_id, id, unacked, self.window);
        }
        true
    }

    /// Receipts that are due but have no session with room.
    pub(crate) fn queued(&self) -> u64 {
        self.lock()
            .routes
            .values()
            .map(|r| r.pending.len() as u64)
            .sum()
    }
}

/// Sends one receipt to the next receiver with a free window slot.
fn try_send(
    sessions: &mut HashMap<SessionId, Peer>,
    route: &mut Route,
    receipt: Arc<Receipt>,
    window: usize,
) -> Result<(), Arc<Receipt>> {
    let n = route.receivers.len();
    for _ in 0..n {
        let id = route.receivers[route.cursor % n];
        route.cursor = route.cursor.wrapping_add(1);
        let Some(peer) = sessions.get_mut(&id) else {
            continue;
        };
        if peer.inflight.len() >= window {
            continue;
        }
        let seq = peer.next_seq();
        let push = Push::Receipt {
            seq,
            receipt: Arc::clone(&receipt),
        };
        if peer.push.send(push).is_ok() {
            peer.inflight.insert(seq, Inflight::Receipt(receipt));
            return Ok(());
        }
    }
    Err(receipt)
}

/// Moves queued receipts onto receivers until the queue is empty or every window is full.
fn fill(sessions: &mut HashMap<SessionId, Peer>, route: &mut Route, window: usize) {
    while let Some(receipt) = route.pending.pop_front() {
        if let Err(receipt) = try_send(sessions, route, receipt, window) {
            route.pending.push_front(receipt);
            break;
        }
    }
}

/// Takes a closed session out of its route and puts its unacknowledged receipts back at the
/// front of the queue, then lets the remaining receivers take them.
fn requeue(
    state: &mut State,
    system_id: String,
    id: SessionId,
    mut unacked: Vec<(u32, Arc<Receipt>)>,
    window: usize,
) {
    let State {
        sessions, routes, ..
    } = state;
    let route = routes.entry(system_id).or_default();
    route.receivers.retain(|&r| r != id);
    // Back to the front, oldest first, so they leave before anything that was queued after them.
    unacked.sort_unstable_by_key(|(seq, _)| *seq);
    for (_, receipt) in unacked.into_iter().rev() {
        route.pending.push_front(receipt);
    }
    fill(sessions, route, window);
}
