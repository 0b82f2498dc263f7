//! Background work on a period, stopped by the node's shutdown signal.

use std::time::Duration;

use tokio::sync::watch;

/// Runs `work` every `period` until shutdown.
pub(crate) async fn every<F, Fut>(mut shutdown: watch::Receiver<bool>, period: Duration, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        work().await;
    }
}
