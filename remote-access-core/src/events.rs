//! Events: everything that happens to a session, for the platform to consume.
//!
//! Each subscriber has its own queue, so a slow subscriber slows nobody: publishing never
//! waits. The queue is bounded ([`crate::AuthorityOptions::event_queue`] events) because a
//! logged-in user can cause `refused` events at will, and an unbounded queue behind a stalled
//! consumer would grow until the gateway runs out of memory. A subscriber whose queue is full
//! misses the events published meanwhile (others still get them); as soon as it has read one,
//! an [`EventKind::Lagged`] event saying how many it missed takes the next place in its
//! queue, so it learns of the gap exactly where the gap is, and what follows is in order.
//! Dropping a [`Subscription`] unsubscribes it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::build::BuildId;
use crate::session::{Event, EventKind};

/// A stream of events; see [`crate::Authority::subscribe`].
pub struct Subscription(Arc<Shared>);

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queued = self.0.queue().entries.len();
        f.debug_struct("Subscription").field("queued", &queued).finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event, or `None` once the authority is gone and every queued event was read.
    /// Cancel-safe: an event leaves the queue only in the call that returns it.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            // Its own statement, so that the lock is released before the wait.
            let next = self.0.queue().pop();
            match next {
                Next::Event(event) => return Some(event),
                Next::Closed => return None,
                // A publish between the check above and this wait left a permit in `ready`,
                // so it is not missed.
                Next::Empty => self.0.ready.notified().await,
            }
        }
    }

    /// The next event if one is already waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        match self.0.queue().pop() {
            Next::Event(event) => Some(event),
            Next::Empty | Next::Closed => None,
        }
    }
}

/// One subscriber's queue, shared by the bus (which holds it weakly, so that dropping the
/// [`Subscription`] frees it at once) and the subscription.
struct Shared {
    queue: Mutex<Queue>,
    /// Woken (one permit at most) when an entry is queued or the bus is gone.
    ready: Notify,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Queue {
    /// At most `capacity` entries, a lag counting as one.
    entries: VecDeque<Entry>,
    capacity: usize,
    /// Events missed since the queue filled up, waiting for room to be queued as a lag. Only
    /// ever set while the queue is full: the first read makes room and moves it in.
    overflow: Option<Lag>,
    /// The bus is gone: once empty, the subscription ends.
    closed: bool,
}

enum Entry {
    Event(Event),
    Lagged(Lag),
}

/// A run of missed events, told to the subscriber as one [`EventKind::Lagged`].
struct Lag {
    dropped: u64,
    /// The first one missed, which the lag event stands in for.
    build_id: BuildId,
    at: OffsetDateTime,
    kind: EventKind,
}

enum Next {
    Event(Event),
    Empty,
    Closed,
}

impl Queue {
    /// Queues `event`, or counts it as missed when the queue is full. Never waits. Returns
    /// whether it was queued.
    fn push(&mut self, event: &Event) -> bool {
        if let Some(lag) = &mut self.overflow {
            lag.dropped = lag.dropped.saturating_add(1);
            return false;
        }
        if self.entries.len() < self.capacity {
            self.entries.push_back(Entry::Event(event.clone()));
            return true;
        }
        // A lag still unread at the back covers the events just before this one: extend it
        // rather than telling two lags in a row.
        if let Some(Entry::Lagged(lag)) = self.entries.back_mut() {
            lag.dropped = lag.dropped.saturating_add(1);
            return false;
        }
        tracing::debug!(capacity = self.capacity, "an event subscriber fell behind; dropping its events");
        let Event { build_id, at, kind, .. } = event;
        self.overflow = Some(Lag { dropped: 1, build_id: build_id.clone(), at: *at, kind: *kind });
        false
    }

    fn pop(&mut self) -> Next {
        let Some(entry) = self.entries.pop_front() else {
            return if self.closed { Next::Closed } else { Next::Empty };
        };
        // The room just made goes to the missed events' lag, before anything published later.
        if let Some(lag) = self.overflow.take() {
            self.entries.push_back(Entry::Lagged(lag));
        }
        Next::Event(match entry {
            Entry::Event(event) => event,
            Entry::Lagged(lag) => self.lag_event(lag),
        })
    }

    fn lag_event(&self, lag: Lag) -> Event {
        let Lag { dropped, build_id, at, kind } = lag;
        let missed = if dropped == 1 { "1 event was".to_owned() } else { format!("{dropped} events were") };
        let reason = format!(
            "this subscriber fell behind (its queue holds {capacity} events): {missed} not \
             delivered to it, starting with a `{first}` event of this build; they may concern any build",
            capacity = self.capacity,
            first = kind.as_str(),
        );
        Event { build_id, at, kind: EventKind::Lagged { dropped }, reason }
    }
}

pub(crate) struct EventBus {
    /// Each subscriber's queue holds at most this many events.
    capacity: usize,
    subscribers: Mutex<Vec<Weak<Shared>>>,
}

impl EventBus {
    /// A bus whose subscribers' queues hold `capacity` events each (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), subscribers: Mutex::default() }
    }

    pub(crate) fn subscribe(&self) -> Subscription {
        let queue =
            Queue { entries: VecDeque::new(), capacity: self.capacity, overflow: None, closed: false };
        let shared = Arc::new(Shared { queue: Mutex::new(queue), ready: Notify::new() });
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::downgrade(&shared));
        Subscription(shared)
    }

    pub(crate) fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        for event in &events {
            tracing::info!(build_id = %event.build_id, kind = event.kind.as_str(), reason = %event.reason, "remote access event");
        }
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|subscriber| {
            let Some(shared) = subscriber.upgrade() else { return false };
            let mut queued = false;
            {
                let mut queue = shared.queue();
                for event in &events {
                    queued |= queue.push(event);
                }
            }
            if queued {
                shared.ready.notify_one();
            }
            true
        });
    }
}

impl Drop for EventBus {
    /// Ends every subscription once it has read what is queued.
    fn drop(&mut self) {
        let subscribers = self.subscribers.get_mut().unwrap_or_else(PoisonError::into_inner);
        for shared in subscribers.drain(..).filter_map(|subscriber| subscriber.upgrade()) {
            shared.queue().closed = true;
            shared.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Event number `n`, for build `b{n % 3}`, at second `n`.
    fn event(n: i64) -> Event {
        Event {
            build_id: BuildId::new(format!("b{}", n % 3)).unwrap(),
            at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(n),
            kind: EventKind::Refused,
            reason: format!("e{n}"),
        }
    }

    fn publish(bus: &EventBus, numbers: std::ops::Range<i64>) {
        for n in numbers {
            bus.publish(vec![event(n)]);
        }
    }

    /// What a subscription has waiting: `e{n}` for events, `lagged{dropped}@{at}` for lags.
    fn drain(subscription: &mut Subscription) -> Vec<String> {
        std::iter::from_fn(|| subscription.try_next())
            .map(|event| match event.kind {
                EventKind::Lagged { dropped } => {
                    format!("lagged{dropped}@{}", event.at.unix_timestamp())
                }
                _ => event.reason,
            })
            .collect()
    }

    fn names(numbers: impl IntoIterator<Item = i64>) -> Vec<String> {
        numbers.into_iter().map(|n| format!("e{n}")).collect()
    }

    #[test]
    fn a_subscriber_that_keeps_up_loses_nothing() {
        let bus = EventBus::new(3);
        let mut fast = bus.subscribe();
        let mut got = Vec::new();
        for n in 0..20 {
            publish(&bus, n..n + 1);
            got.extend(drain(&mut fast));
        }
        // A batch of a full queue's worth at once fits too.
        bus.publish((20..23).map(event).collect());
        got.extend(drain(&mut fast));
        assert_eq!(got, names(0..23));
    }

    #[test]
    fn a_slow_subscriber_gets_a_lag_in_place_of_what_it_missed_then_the_rest_in_order() {
        let bus = EventBus::new(3);
        let (mut slow, mut fast) = (bus.subscribe(), bus.subscribe());
        let mut fast_got = Vec::new();
        for n in 0..10 {
            publish(&bus, n..n + 1);
            fast_got.extend(drain(&mut fast));
        }
        assert_eq!(slow.0.queue().entries.len(), 3, "bounded");
        // The lag is told as soon as there is room, without waiting for a later publish.
        assert_eq!(slow.try_next().map(|e| e.reason), Some("e0".into()));
        // Missed while the lag was still unread: the same gap, so the same lag.
        publish(&bus, 10..11);
        fast_got.extend(drain(&mut fast));
        let mut got = vec!["e0".to_owned()];
        got.extend(drain(&mut slow));
        assert_eq!(got, ["e0", "e1", "e2", "lagged8@3"]);
        publish(&bus, 11..13);
        fast_got.extend(drain(&mut fast));
        assert_eq!(drain(&mut slow), names(11..13));
        assert_eq!(fast_got, names(0..13), "the fast one lost nothing");
    }

    #[test]
    fn the_lag_event_names_the_first_missed_event_and_the_count() {
        let bus = EventBus::new(2);
        let mut slow = bus.subscribe();
        publish(&bus, 0..7);
        let events: Vec<Event> = std::iter::from_fn(|| slow.try_next()).collect();
        let lag = &events[2];
        assert_eq!(lag.kind, EventKind::Lagged { dropped: 5 });
        assert_eq!(lag.kind.as_str(), "lagged");
        assert_eq!((lag.build_id.as_str(), lag.at.unix_timestamp()), ("b2", 2));
        assert!(lag.reason.contains("5 events were not delivered"), "{}", lag.reason);
        assert!(lag.reason.contains("holds 2 events") && lag.reason.contains("`refused`"), "{}", lag.reason);
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn a_queue_of_one_still_tells_every_gap() {
        let bus = EventBus::new(1);
        let mut slow = bus.subscribe();
        publish(&bus, 0..3);
        assert_eq!(slow.try_next().map(|e| e.reason), Some("e0".into()));
        // The lag took the only place; what comes next joins it.
        publish(&bus, 3..5);
        assert_eq!(drain(&mut slow), ["lagged4@1"]);
        publish(&bus, 5..6);
        assert_eq!(drain(&mut slow), ["e5"]);
        let lag = {
            publish(&bus, 6..8);
            std::iter::from_fn(|| slow.try_next()).nth(1).unwrap()
        };
        assert!(lag.reason.contains("1 event was not delivered"), "{}", lag.reason);
    }

    #[test]
    fn a_subscriber_that_never_reads_stays_bounded() {
        let bus = EventBus::new(100);
        let slow = bus.subscribe();
        bus.publish((0..100_000).map(event).collect());
        let queue = slow.0.queue();
        assert_eq!(queue.entries.len(), 100);
        assert_eq!(queue.overflow.as_ref().map(|lag| lag.dropped), Some(99_900));
    }

    #[tokio::test]
    async fn next_waits_for_an_event_and_a_cancelled_wait_loses_nothing() {
        let bus = EventBus::new(4);
        let mut subscription = bus.subscribe();
        let waited = tokio::time::timeout(Duration::from_millis(20), subscription.next()).await;
        assert!(waited.is_err(), "nothing published yet");
        publish(&bus, 0..1);
        let got = tokio::time::timeout(Duration::from_secs(5), subscription.next()).await;
        assert_eq!(got.unwrap().map(|e| e.reason), Some("e0".into()));
        // A wait that is cancelled just as an event arrives leaves it queued.
        {
            let wait = subscription.next();
            tokio::pin!(wait);
            assert!(futures_poll_once(wait.as_mut()).await.is_none());
            publish(&bus, 1..2);
        }
        assert_eq!(subscription.try_next().map(|e| e.reason), Some("e1".into()));
        // A waiter is woken by a publish from another task.
        let waiter = tokio::spawn(async move { subscription.next().await.map(|e| e.reason) });
        tokio::task::yield_now().await;
        publish(&bus, 2..3);
        assert_eq!(waiter.await.unwrap(), Some("e2".into()));
    }

    /// Polls a future once: its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn once_the_bus_is_gone_the_queued_events_are_read_then_the_stream_ends() {
        let bus = EventBus::new(2);
        let mut subscription = bus.subscribe();
        publish(&bus, 0..5);
        drop(bus);
        let mut got = Vec::new();
        while let Some(event) = subscription.next().await {
            got.push(event.kind.as_str());
        }
        assert_eq!(got, ["refused", "refused", "lagged"]);
        assert!(subscription.try_next().is_none());
    }

    #[test]
    fn a_dropped_subscription_is_forgotten() {
        let bus = EventBus::new(2);
        let (kept, dropped) = (bus.subscribe(), bus.subscribe());
        drop(dropped);
        publish(&bus, 0..1);
        assert_eq!(bus.subscribers.lock().unwrap().len(), 1);
        drop(kept);
    }
}
