//! [`Watermark`]: a count that only goes up, and a wait for it to reach a mark. Progress of
//! ordered work (jobs staged, commits shown) that a reader waits on.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug)]
pub struct Watermark(watch::Sender<u64>);

impl Default for Watermark {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl Watermark {
    /// Raises the mark to `to`; a lower `to` (a raise that lost a race) leaves it.
    pub fn raise(&self, to: u64) {
        self.0.send_if_modified(|mark| {
            let higher = to > *mark;
            *mark = (*mark).max(to);
            higher
        });
    }

    /// Whether the mark reaches `target` within `limit` (at once when it already has).
    pub async fn reached(&self, target: u64, limit: Duration) -> bool {
        let mut mark = self.0.subscribe();
        tokio::time::timeout(limit, mark.wait_for(|mark| *mark >= target)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mark_only_rises_and_wakes_its_waiters() {
        let mark = std::sync::Arc::new(Watermark::default());
        assert!(mark.reached(0, Duration::ZERO).await, "nothing to wait for");
        assert!(!mark.reached(1, Duration::from_millis(10)).await, "not there yet");
        let raiser = mark.clone();
        let waiter = tokio::spawn(async move { mark.reached(2, Duration::from_secs(5)).await });
        raiser.raise(2);
        raiser.raise(1);
        assert!(waiter.await.unwrap(), "woken by the raise");
        assert!(raiser.reached(2, Duration::ZERO).await, "a lower raise leaves the mark");
    }
}
