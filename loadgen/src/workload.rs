//! The sending side of each workload: which peer sends how many messages
//! to whom, paced by the per-connection ack window (and, for `rate`, by a
//! ticker).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use futures_util::SinkExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{Sink, WINDOW};
use crate::payload::{self, Encoder, Header, NONCE_B64};
use crate::stats::Stats;

/// The group every member of a `group` run is put in.
pub const GROUP: &str = "load";
/// The target spec that reaches it.
pub const GROUP_TARGET: &str = "@load";

/// Ends the `id` of a send addressed to a stalled member, so its ack can
/// be told apart (it expects no delivery).
pub const STALLED_ID_SUFFIX: &str = "-s";

/// Who a sender's messages go to.
#[derive(Clone)]
pub enum Targets {
    /// A uniformly random choice among the other peers of the sender's
    /// mesh (`peers`, member keys, the sender at `own`) and the stalled
    /// members of that mesh (`stalled`), so a stalled member gets a normal
    /// peer's share.
    RandomPeer {
        peers: Arc<Vec<String>>,
        stalled: Arc<Vec<String>>,
        own: Option<usize>,
    },
    /// The same target spec every time (`*`, `@load`).
    Fixed(&'static str),
}

/// One random choice for `Targets::RandomPeer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Normal peer i of the mesh (never the sender).
    Peer(usize),
    /// Stalled member j of the mesh.
    Stalled(usize),
}

/// Picks uniformly among the peers other than `own` (the sender, when it
/// is in the list) and the `stalled` members. Needs someone to pick.
pub fn pick(rng: &mut impl Rng, peers: usize, own: Option<usize>, stalled: usize) -> Pick {
    let others = peers - usize::from(own.is_some());
    let j = rng.gen_range(0..others + stalled);
    if j < others {
        Pick::Peer(match own {
            Some(o) if j >= o => j + 1,
            _ => j,
        })
    } else {
        Pick::Stalled(j - others)
    }
}

/// The write half of one peer, with its send credits.
pub struct Sender {
    pub index: usize,
    pub sink: Sink,
    pub window: Arc<Semaphore>,
    pub enc: Arc<Encoder>,
    pub stats: Arc<Stats>,
    pub targets: Targets,
    seq: u64,
    rng: StdRng,
}

impl Sender {
    pub fn new(
        index: usize,
        sink: Sink,
        window: Arc<Semaphore>,
        enc: Arc<Encoder>,
        stats: Arc<Stats>,
        targets: Targets,
    ) -> Sender {
        Sender {
            index,
            sink,
            window,
            enc,
            stats,
            targets,
            seq: 0,
            rng: StdRng::from_entropy(),
        }
    }

    /// The next target spec, and whether it is a stalled member.
    fn target(&mut self) -> (&str, bool) {
        match &self.targets {
            Targets::Fixed(t) => (t, false),
            Targets::RandomPeer {
                peers,
                stalled,
                own,
            } => match pick(&mut self.rng, peers.len(), *own, stalled.len()) {
                Pick::Peer(i) => (&peers[i], false),
                Pick::Stalled(j) => (&stalled[j], true),
            },
        }
    }

    /// Sends one message once a credit is free; `sent_us` overrides the
    /// embedded send time (the `rate` ticker's scheduled time).
    pub async fn send_one(&mut self, sent_us: Option<u64>) -> Result<()> {
        let index = self.index;
        self.window
            .acquire()
            .await
            .map_err(|_| anyhow!("peer {index}: socket closed while sending"))?
            .forget();
        let seq = self.seq;
        self.seq += 1;
        let ciphertext = self.enc.encode(Header {
            sender: index as u64,
            seq,
            sent_us: sent_us.unwrap_or_else(payload::now_us),
        });
        let (target, to_stalled) = self.target();
        let suffix = if to_stalled { STALLED_ID_SUFFIX } else { "" };
        // Every field is ours and needs no JSON escaping.
        let frame = format!(
            r#"{{"type":"send","id":"{index}-{seq}{suffix}","targetSpec":"{target}","priority":"now","nonce":"{NONCE_B64}","ciphertext":"{ciphertext}"}}"#
        );
        Stats::bump(&self.stats.sent);
        if to_stalled {
            Stats::bump(&self.stats.sent_to_stalled);
        }
        self.sink
            .send(Message::Text(frame.into()))
            .await
            .map_err(|e| anyhow!("peer {index}: send failed: {e}"))
    }

    /// Waits until every send has its ack; gives the socket back.
    pub async fn finish(self) -> Result<(usize, Sink)> {
        let index = self.index;
        self.window
            .acquire_many(WINDOW as u32)
            .await
            .map_err(|_| anyhow!("peer {index}: socket closed before all acks arrived"))?
            .forget();
        self.window.add_permits(WINDOW);
        Ok((self.index, self.sink))
    }

    /// `dm`, `group`, `broadcast`: `count` messages as fast as the window
    /// allows.
    pub async fn run_fixed(mut self, count: u64) -> Result<(usize, Sink)> {
        for _ in 0..count {
            self.send_one(None).await?;
        }
        self.finish().await
    }

    /// `rate`: one message per scheduled time received.
    pub async fn run_fed(mut self, mut feed: mpsc::Receiver<u64>) -> Result<(usize, Sink)> {
        while let Some(at) = feed.recv().await {
            self.send_one(Some(at)).await?;
        }
        self.finish().await
    }
}

/// How long past `--duration` a lagging ticker may go on offering what
/// was due (at most two ticks' worth per tick).
const TAIL: Duration = Duration::from_secs(1);

/// The `rate` ticker: offers `rate` messages per second in total for
/// `duration`, round-robin over `feeds`, spread evenly over time. Ticks are
/// at most every millisecond; a late tick catches up by at most one extra
/// tick's worth, so a stall never turns into a burst. Returns how many
/// offers were dropped because a peer's queue was full.
pub async fn offer(feeds: Vec<mpsc::Sender<u64>>, rate: f64, duration: Duration) -> u64 {
    let total = (rate * duration.as_secs_f64()).floor() as u64;
    let period = Duration::from_secs_f64((1.0 / rate).max(0.001));
    let per_tick = (rate * period.as_secs_f64()).ceil().max(1.0) as u64;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let start = Instant::now();
    let start_us = payload::now_us();
    let (mut offered, mut dropped) = (0u64, 0u64);
    while offered < total {
        ticker.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= duration + TAIL {
            break;
        }
        let due = ((rate * elapsed.as_secs_f64()).floor() as u64 + 1).min(total);
        let n = due.saturating_sub(offered).min(per_tick * 2);
        for _ in 0..n {
            // The scheduled send time, so queueing in the generator counts
            // against latency instead of hiding it.
            let at = start_us + (offered as f64 / rate * 1e6) as u64;
            let feed = &feeds[(offered % feeds.len() as u64) as usize];
            if feed.try_send(at).is_err() {
                dropped += 1;
            }
            offered += 1;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_never_self_and_give_stalled_a_peer_share() {
        let mut rng = StdRng::seed_from_u64(7);
        let (peers, own, stalled) = (4, 2, 2);
        let mut counts = [0u32; 6];
        for _ in 0..50_000 {
            match pick(&mut rng, peers, Some(own), stalled) {
                Pick::Peer(i) => counts[i] += 1,
                Pick::Stalled(j) => counts[peers + j] += 1,
            }
        }
        assert_eq!(counts[own], 0);
        // 3 other peers + 2 stalled: each about a fifth.
        for (i, &c) in counts.iter().enumerate().filter(|(i, _)| *i != own) {
            assert!((9_000..11_000).contains(&c), "slot {i}: {counts:?}");
        }
        for _ in 0..1000 {
            assert_eq!(pick(&mut rng, 2, Some(0), 0), Pick::Peer(1));
            assert_eq!(pick(&mut rng, 2, Some(1), 0), Pick::Peer(0));
            // A sender outside the list (--cross-node) may pick any entry.
            assert!(matches!(pick(&mut rng, 2, None, 0), Pick::Peer(0 | 1)));
            assert_eq!(pick(&mut rng, 1, None, 0), Pick::Peer(0));
        }
    }
}
