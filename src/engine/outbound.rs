//! A session's outbound queue: frames on their way to its writer task.
//!
//! Bounded like a tokio `mpsc` channel (a sender waits for a free slot,
//! `try_send` refuses when full, a dropped writer fails every sender), but
//! its memory follows what is queued. tokio's channel allocates a 32-slot
//! block up front and keeps a spare once it has cycled; with one queue per
//! socket that was ~2 KiB of every idle connection.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::Semaphore;

use super::sessions::Outbound;

/// Slots a drained queue keeps: a burst's buffer is given back, the few
/// frames of an idle session (a ping, an event) reuse this one.
const KEEP: usize = 4;

struct Shared {
    state: Mutex<State>,
    /// Free slots: a sender takes one before queueing, the writer returns
    /// it on taking the frame. Closed when the writer goes away.
    space: Semaphore,
    writer: AtomicWaker,
}

struct State {
    queue: VecDeque<Outbound>,
    senders: usize,
    writer_alive: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queue holding at most `capacity` frames.
pub fn channel(capacity: usize) -> (OutboundTx, OutboundRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            writer_alive: true,
        }),
        space: Semaphore::new(capacity),
        writer: AtomicWaker::new(),
    });
    (
        OutboundTx {
            shared: shared.clone(),
        },
        OutboundRx { shared },
    )
}

/// The engine's end. `Err` gives the frame back: the writer is gone.
pub struct OutboundTx {
    shared: Arc<Shared>,
}

impl OutboundTx {
    /// Queues `frame`, waiting while the queue is full.
    pub async fn send(&self, frame: Outbound) -> Result<(), Outbound> {
        match self.shared.space.acquire().await {
            Ok(slot) => slot.forget(),
            Err(_) => return Err(frame),
        }
        self.push(frame)
    }

    /// Queues `frame` unless the queue is full or the writer is gone.
    pub fn try_send(&self, frame: Outbound) -> Result<(), Outbound> {
        match self.shared.space.try_acquire() {
            Ok(slot) => slot.forget(),
            Err(_) => return Err(frame),
        }
        self.push(frame)
    }

    fn push(&self, frame: Outbound) -> Result<(), Outbound> {
        {
            let mut s = self.shared.lock();
            if !s.writer_alive {
                return Err(frame);
            }
            s.queue.push_back(frame);
        }
        self.shared.writer.wake();
        Ok(())
    }
}

impl Clone for OutboundTx {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        OutboundTx {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for OutboundTx {
    fn drop(&mut self) {
        let last = {
            let mut s = self.shared.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.shared.writer.wake();
        }
    }
}

/// The writer's end.
pub struct OutboundRx {
    shared: Arc<Shared>,
}

impl OutboundRx {
    /// The next frame, oldest first; `None` once every sender is gone and
    /// the queue is empty.
    pub async fn recv(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        if let Some(frame) = self.take(|s| s.queue.pop_front()) {
            return Poll::Ready(Some(frame));
        }
        // Registered before the second look, so a frame pushed in between
        // still wakes us.
        self.shared.writer.register(cx.waker());
        let mut ended = false;
        let next = self.take(|s| {
            ended = s.senders == 0;
            s.queue.pop_front()
        });
        match next {
            Some(frame) => Poll::Ready(Some(frame)),
            None if ended => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    /// The next frame if one is queued now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.take(|s| s.queue.pop_front())
    }

    /// Runs `pop` under the lock; a frame taken frees its slot, and a
    /// drained queue gives back a burst's buffer.
    fn take(&mut self, pop: impl FnOnce(&mut State) -> Option<Outbound>) -> Option<Outbound> {
        let frame = {
            let mut s = self.shared.lock();
            let frame = pop(&mut s)?;
            if s.queue.is_empty() && s.queue.capacity() > KEEP {
                s.queue.shrink_to(KEEP);
            }
            frame
        };
        self.shared.space.add_permits(1);
        Some(frame)
    }
}

impl Drop for OutboundRx {
    fn drop(&mut self) {
        self.shared.space.close();
        let queued = {
            let mut s = self.shared.lock();
            s.writer_alive = false;
            std::mem::take(&mut s.queue)
        };
        // Dropped outside the lock: a marker's waiter runs on its drop.
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    fn text(s: &'static str) -> Outbound {
        Outbound::Text(s.into())
    }

    fn as_text(o: Option<Outbound>) -> String {
        match o {
            Some(Outbound::Text(t)) => t.as_str().to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_end_with_the_last_sender() {
        let (tx, mut rx) = channel(8);
        let tx2 = tx.clone();
        tx.send(text("a")).await.unwrap();
        tx2.try_send(text("b")).unwrap();
        tx.send(text("c")).await.unwrap();
        drop(tx);
        assert_eq!(as_text(rx.recv().await), "a");
        assert_eq!(as_text(rx.recv().await), "b");
        drop(tx2);
        assert_eq!(
            as_text(rx.recv().await),
            "c",
            "queued frames outlive senders"
        );
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_try_send_and_makes_send_wait() {
        let (tx, mut rx) = channel(2);
        tx.try_send(text("a")).unwrap();
        tx.try_send(text("b")).unwrap();
        assert!(tx.try_send(text("x")).is_err(), "full");
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(text("c")).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "waits for a slot");
        assert_eq!(as_text(rx.recv().await), "a");
        assert!(waiting.await.unwrap());
        assert_eq!(as_text(rx.recv().await), "b");
        assert_eq!(as_text(rx.recv().await), "c");
    }

    #[tokio::test]
    async fn a_gone_writer_fails_waiting_and_later_senders_and_drops_the_queue() {
        let (tx, rx) = channel(1);
        let (done, written) = oneshot::channel();
        tx.send(Outbound::Marker(done)).await.unwrap();
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(text("b")).await.is_err() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        assert!(waiting.await.unwrap(), "a waiting sender is refused");
        assert!(tx.send(text("c")).await.is_err());
        assert!(tx.try_send(text("d")).is_err());
        assert!(written.await.is_err(), "an unwritten marker never fires");
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_frame_and_for_the_end() {
        let (tx, mut rx) = channel(4);
        let reader = tokio::spawn(async move {
            let first = as_text(rx.recv().await);
            (first, rx.recv().await.is_none())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(text("a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        assert_eq!(reader.await.unwrap(), ("a".to_string(), true));
    }

    #[tokio::test]
    async fn a_drained_queue_gives_back_a_burst_buffer() {
        let (tx, mut rx) = channel(256);
        for _ in 0..200 {
            tx.try_send(Outbound::Ping).unwrap();
        }
        for _ in 0..200 {
            assert!(matches!(rx.recv().await, Some(Outbound::Ping)));
        }
        assert!(rx.shared.lock().queue.capacity() <= KEEP);
        assert_eq!(rx.shared.space.available_permits(), 256);
    }
}
