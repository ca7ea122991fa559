//! Periodic jobs: a service's cron work (chat-read's count flush, events' retention).

use std::future::Future;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::shutdown::Shutdown;

/// Runs `job` on `schedule` (six-field cron, seconds first) until `shutdown`; `what` names the
/// job in the log. `job` reports its own outcome: a run that fails waits for the next one.
pub async fn run<F, Fut>(what: &str, schedule: &str, job: F, shutdown: Shutdown) -> anyhow::Result<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut scheduler = JobScheduler::new().await?;
    scheduler.add(Job::new_async(schedule, move |_id, _scheduler| Box::pin(job()))?).await?;
    scheduler.start().await?;
    tracing::info!(%schedule, "{what} scheduled");
    shutdown.wait().await;
    scheduler.shutdown().await?;
    Ok(())
}
