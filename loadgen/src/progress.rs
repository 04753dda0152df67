//! The progress bar on stderr: only without `--json`, and only once the
//! run has gone on for more than a second (short runs print nothing but
//! their summary).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs shorter than this never show a bar.
const SHOW_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Progress {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    bar: ProgressBar,
    started: Instant,
    shown: AtomicBool,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        let inner = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
            let style = ProgressStyle::with_template(
                "{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            Arc::new(Inner {
                bar,
                started: Instant::now(),
                shown: AtomicBool::new(false),
            })
        });
        Progress { inner }
    }

    /// Starts a new phase named `msg` counting up to `len`.
    pub fn phase(&self, msg: &'static str, len: u64) {
        if let Some(i) = &self.inner {
            i.bar.reset();
            i.bar.set_length(len);
            i.bar.set_position(0);
            i.bar.set_message(msg);
            self.tick();
        }
    }

    pub fn set(&self, pos: u64) {
        if let Some(i) = &self.inner {
            i.bar.set_position(pos);
            self.tick();
        }
    }

    pub fn inc(&self) {
        if let Some(i) = &self.inner {
            i.bar.inc(1);
            self.tick();
        }
    }

    /// Turns the bar on once the run has lasted long enough.
    pub fn tick(&self) {
        if let Some(i) = &self.inner {
            if i.started.elapsed() >= SHOW_AFTER && !i.shown.swap(true, Ordering::Relaxed) {
                i.bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
    }

    pub fn finish(&self) {
        if let Some(i) = &self.inner {
            i.bar.finish_and_clear();
        }
    }
}
