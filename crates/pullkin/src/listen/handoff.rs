//! The bounded queue between an app's connection task and its consumer.
//!
//! One producer (the connection task), one consumer (the application's stream or
//! [`crate::Pullkin::run`]). An idle queue is a mutex around an empty deque, the
//! consumer's waker and a notifier for the producer: thousands of idle apps hold no
//! block of slots each, as a channel would. The consumer is polled
//! ([`Receiver::poll_recv`]), so a stream over it keeps no future between polls.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use tokio::sync::Notify;

/// How often a producer waiting for room looks again, when the consumer takes items too
/// slowly to free half the queue soon.
const ROOM_POLL: Duration = Duration::from_millis(50);

/// A deque this long or shorter keeps its room when idle; a longer one (grown by a
/// burst) gives it back ([`Sender::shrink`]).
const KEEP: usize = 16;

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// The sender is gone: the consumer ends once the queue is drained.
    sender_gone: bool,
    /// The receiver is gone: sending fails.
    receiver_gone: bool,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// The consumer waiting for an item (woken when one was pushed, or the sender left).
    item: AtomicWaker,
    /// Items were pushed since the last wake-up ([`Sender::wake`] wakes nobody else).
    unannounced: AtomicBool,
    /// Room was made, or the receiver left.
    room: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section is a few field updates: a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending half; the queue ends for the receiver when it is dropped.
#[derive(Debug)]
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The receiving half; sending fails once it is dropped.
#[derive(Debug)]
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// The receiver is gone; the item comes back.
#[derive(Debug)]
pub(crate) struct Closed<T>(pub T);

/// A queue holding at most `capacity` items (at least one).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
        }),
        capacity: capacity.max(1),
        item: AtomicWaker::new(),
        unannounced: AtomicBool::new(false),
        room: Notify::new(),
    });
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

/// What [`Sender::push`] could not queue; the item comes back.
#[derive(Debug)]
pub(crate) enum PushError<T> {
    /// The queue is full.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> Sender<T> {
    /// Queues `item` if there is room, without waking the consumer: a producer queueing
    /// a burst calls [`Sender::wake`] after it.
    pub(crate) fn push(&self, item: T) -> Result<(), PushError<T>> {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Err(PushError::Closed(item));
        }
        if state.items.len() >= self.0.capacity {
            return Err(PushError::Full(item));
        }
        state.items.push_back(item);
        self.0.unannounced.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Wakes the consumer if it waits and items were pushed since the last wake-up (a
    /// producer may call it after every turn of its loop).
    pub(crate) fn wake(&self) {
        if self.0.unannounced.swap(false, Ordering::Relaxed) {
            self.0.item.wake();
        }
    }

    /// Queues `item` and wakes the consumer, waiting while the queue is full.
    pub(crate) async fn send(&self, mut item: T) -> Result<(), Closed<T>> {
        loop {
            match self.push(item) {
                Ok(()) => {
                    self.wake();
                    return Ok(());
                }
                Err(PushError::Closed(back)) => return Err(Closed(back)),
                Err(PushError::Full(back)) => item = back,
            }
            // What was queued without a wake-up must be taken to make room.
            self.wake();
            // Woken once half the queue is free (a pop between the check and this wait
            // left a permit: no wake-up is lost); a slow consumer's single pops are found
            // within ROOM_POLL, so a connection held back by it waits no longer than one
            // item for its turn, as its loop has timers and acknowledgements to serve.
            let _ = tokio::time::timeout(ROOM_POLL, self.0.room.notified()).await;
        }
    }

    /// Gives back the room a burst grew, when the queue is empty (for an idle
    /// connection).
    pub(crate) fn shrink(&self) {
        let mut state = self.0.lock();
        if state.items.is_empty() && state.items.capacity() > KEEP {
            state.items = VecDeque::new();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.item.wake();
    }
}

impl<T> Receiver<T> {
    /// The next item if there is one (`None` once the sender is gone and the queue
    /// drained); else pending, `cx` woken when one is pushed.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(next) = self.try_recv() {
            return Poll::Ready(next);
        }
        self.0.item.register(cx.waker());
        // A push between the look and the registration woke nobody: look again.
        match self.try_recv() {
            Some(next) => Poll::Ready(next),
            None => Poll::Pending,
        }
    }

    /// `Some(item)`, `Some(None)` at the end, `None` when there is nothing yet.
    fn try_recv(&mut self) -> Option<Option<T>> {
        let mut state = self.0.lock();
        if let Some(item) = state.items.pop_front() {
            // A producer waits only on a full queue; it is woken once half is free.
            let half_free = state.items.len() == self.0.capacity / 2;
            drop(state);
            if half_free {
                self.0.room.notify_one();
            }
            return Some(Some(item));
        }
        state.sender_gone.then_some(None)
    }
}

/// The items, as [`Receiver::poll_recv`] gives them.
impl<T> futures_util::Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        // What was queued is dropped now, as a channel's would be.
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
        self.0.room.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn items_arrive_in_order_and_a_full_queue_waits_for_room() {
        let (tx, mut rx) = channel::<u32>(2);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let third = tokio::spawn(async move {
            tx.send(3).await.unwrap();
            tx
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!third.is_finished(), "the third item waits for room");
        assert_eq!(rx.next().await, Some(1));
        let tx = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("room was made")
            .unwrap();
        assert_eq!(rx.next().await, Some(2));
        assert_eq!(rx.next().await, Some(3));
        drop(tx);
        assert_eq!(rx.next().await, None, "the sender left: the queue ends");
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_and_a_gone_receiver_fails_the_sender() {
        let (tx, mut rx) = channel::<u32>(1);
        let waiter = tokio::spawn(async move {
            let first = rx.next().await;
            (first, rx)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        tx.send(7).await.unwrap();
        let (first, rx) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(first, Some(7));
        tx.send(8).await.unwrap();
        // The queue is full; the receiver leaves while the sender waits.
        let blocked = tokio::spawn(async move { tx.send(9).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(rx);
        let result = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("the sender was told")
            .unwrap();
        match result {
            Err(Closed(9)) => {}
            other => panic!("expected the item back, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_burst_gives_its_room_back_once_drained() {
        let (tx, mut rx) = channel::<u32>(1000);
        for i in 0..500 {
            tx.send(i).await.unwrap();
        }
        for i in 0..499 {
            assert_eq!(rx.next().await, Some(i));
        }
        tx.shrink();
        assert!(rx.0.lock().items.capacity() >= 500, "not empty: kept");
        assert_eq!(rx.next().await, Some(499));
        tx.shrink();
        assert_eq!(rx.0.lock().items.capacity(), 0);
    }

    #[tokio::test]
    async fn pushed_items_wait_for_the_wake_and_a_full_queue_refuses() {
        let (tx, mut rx) = channel::<u32>(2);
        let waiter = tokio::spawn(async move {
            let first = rx.next().await;
            (first, rx)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert!(matches!(tx.push(3), Err(PushError::Full(3))));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "no wake-up yet");
        tx.wake();
        let (first, mut rx) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(first, Some(1));
        assert_eq!(rx.next().await, Some(2));
        drop(rx);
        assert!(matches!(tx.push(4), Err(PushError::Closed(4))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_waiting_for_room_wakes_the_consumer_and_is_woken_at_half() {
        let (tx, mut rx) = channel::<u32>(4);
        let consumer = tokio::spawn(async move {
            let first = rx.next().await;
            (first, rx)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        for i in 0..4 {
            tx.push(i).unwrap();
        }
        let sender = tokio::spawn(async move {
            tx.send(4).await.unwrap();
            tx
        });
        // The sender found the queue full: it woke the consumer for what was pushed
        // quietly, and waits.
        let (first, mut rx) = tokio::time::timeout(Duration::from_secs(5), consumer)
            .await
            .expect("woken by the waiting sender")
            .unwrap();
        assert_eq!(first, Some(0));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!sender.is_finished(), "one item taken: not woken yet");
        assert_eq!(rx.next().await, Some(1));
        let _tx = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect("half free: woken")
            .unwrap();
        for i in 2..5 {
            assert_eq!(rx.next().await, Some(i));
        }
    }

    #[test]
    fn a_wake_without_new_items_wakes_nobody() {
        use futures_util::task::{ArcWake, waker};
        use std::sync::atomic::AtomicUsize;

        struct Count(AtomicUsize);
        impl ArcWake for Count {
            fn wake_by_ref(this: &Arc<Self>) {
                this.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = waker(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = channel::<u32>(4);
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.wake();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "nothing pushed: not woken"
        );
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        tx.wake();
        tx.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake-up for the two");
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_held_back_by_a_slow_consumer_takes_each_freed_place_within_the_poll() {
        let (tx, mut rx) = channel::<u32>(8);
        for i in 0..8 {
            tx.push(i).unwrap();
        }
        let sender = tokio::spawn(async move {
            tx.send(8).await.unwrap();
            tx
        });
        tokio::time::sleep(ROOM_POLL * 3).await;
        assert!(!sender.is_finished(), "full: waits");
        // One item taken, far from half: the sender's next look finds the place.
        assert_eq!(rx.next().await, Some(0));
        tokio::time::sleep(ROOM_POLL + Duration::from_millis(1)).await;
        assert!(
            sender.is_finished(),
            "the freed place was taken within the poll"
        );
        for i in 1..9 {
            assert_eq!(rx.next().await, Some(i));
        }
    }
}
