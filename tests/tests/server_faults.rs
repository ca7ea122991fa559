//! Fault tests that kill or lock a server, not a chatmesh process: RabbitMQ SIGKILLed and
//! started again, MariaDB SIGKILLed and started again, and the messages table locked for
//! longer than the consumer's attempts last. Each test runs its own broker or database server
//! (the machine's carry other tests' data) under a split deployment, keeps writers creating
//! messages throughout, and ends by reading back every 201 with its content; a number handed
//! out twice fails the writer that got it.

use std::time::{Duration, Instant};

use chatmesh_e2e::Api;
use chatmesh_e2e::faults::{Load, chat_read, chat_under_load, lost, wait_for};
use chatmesh_e2e::servers::{MariaDb, RabbitNode};
use chatmesh_e2e::split::{SplitChat, production_urls};

/// Each test runs a server of its own and a deployment under load: two at once on a small
/// host starve each other past their deadlines.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The most any of these tests may take, past every step's own deadline.
const TEST_LIMIT: Duration = Duration::from_secs(300);

/// Runs the test `test` (skipped where the production backends are not configured), one at a
/// time: `body`, given the instant it began, under [`TEST_LIMIT`], once the workspace binaries
/// are built: the first test of a process builds them, which may take minutes that are no part
/// of the fault.
async fn fault_test<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Instant) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _turn = ONE_AT_A_TIME.lock().await;
    if production_urls(test).is_none() {
        return;
    }
    tokio::task::spawn_blocking(chatmesh_e2e::harness::bin_dir).await.expect("build the workspace binaries");
    let began = Instant::now();
    tokio::time::timeout(TEST_LIMIT, body(began)).await.unwrap_or_else(|_| panic!("{test} took over {TEST_LIMIT:?}"))
}

/// Prints how far a test has got, so a test that fails on a deadline shows where it stood.
fn progress(began: Instant, what: &str) {
    eprintln!("[{:>7.1?}] {what}", began.elapsed());
}

/// The status of a process's `/readyz`, or `None` when it does not answer.
async fn readyz(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    client.get(format!("{url}/readyz")).send().await.ok().map(|r| r.status().as_u16())
}

/// Waits until `url`'s `/readyz` answers `status`.
async fn wait_for_readyz(what: &str, url: &str, status: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    while readyz(url).await != Some(status) {
        assert!(started.elapsed() < limit, "{what}: /readyz did not answer {status} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

/// Once the writers have more than 100 creates acknowledged past the `at_restart` they had at
/// the server's restart: every acknowledged message is persisted with its content and nothing
/// was dead-lettered. How many creates were acknowledged, and how many answered 503.
async fn assert_nothing_lost_after_restart(
    began: Instant,
    mesh: &SplitChat,
    api: &Api,
    token: &str,
    chat: i64,
    load: Load,
    at_restart: usize,
) -> (usize, usize) {
    wait_for("writes after the restart", Duration::from_secs(60), || load.acknowledged_count() > at_restart + 100)
        .await;
    let unavailable = load.unavailable_count();
    progress(began, "reading back");
    let (acknowledged, _) = load.stop().await;
    let lost = lost(api, token, chat, &acknowledged, Duration::from_secs(120)).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages are not persisted with their content; first (number, stored): {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    let dead = chat_read(mesh, &["dead-letters"]);
    assert!(dead.trim().is_empty(), "nothing is dead-lettered: {dead}");
    (acknowledged.len(), unavailable)
}

/// RabbitMQ SIGKILLed under load (every process of the node, no goodbye) and started again
/// on its data dir: creates answer 503 while it is dead, never 201, and every 201 from
/// before the kill and after the restart is persisted with its content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_sigkill_mid_stream_loses_nothing() {
    const TEST: &str = "rabbitmq_sigkill_mid_stream";
    fault_test(TEST, |began| async move {
        let mut broker = RabbitNode::start().await;
        let first_start = began.elapsed();
        progress(began, "broker answers");
        let mesh = SplitChat::start_on(TEST, None, Some(&broker.url()), &[]).await.expect("urls checked above");
        progress(began, "deployment started");
        let (api, token, chat, load) = chat_under_load(&mesh, "server faults", "writes before the kill", 100).await;
        progress(began, "killing the broker");
        broker.kill();
        let at_kill = load.unavailable_count();
        wait_for("503s while the broker is dead", Duration::from_secs(30), || load.unavailable_count() > at_kill + 5)
            .await;
        // Requests in flight at the kill have had their answer by now: from here to the restart
        // no create can be confirmed.
        let dead_from = load.acknowledged_count();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let dead_until = load.acknowledged_count();
        assert_eq!(dead_until, dead_from, "creates answered 201 while the broker was dead");

        progress(began, "starting the broker again");
        let restart = broker.start_again().await;
        progress(began, "broker answers again");
        let restarted = Instant::now();
        let at_restart = load.acknowledged_count();
        wait_for("a 201 after the restart", Duration::from_secs(60), || load.acknowledged_count() > at_restart).await;
        let first_201 = restarted.elapsed();
        let (acknowledged, unavailable) =
            assert_nothing_lost_after_restart(began, &mesh, &api, &token, chat, load, at_restart).await;
        eprintln!(
            "rabbitmq sigkill: node first start {first_start:.1?}, restart after the kill {restart:.1?}, first 201 \
             {first_201:.1?} after it answered; {acknowledged} creates acknowledged and persisted, {unavailable} \
             answered 503; test {:.1?}",
            began.elapsed()
        );
    })
    .await;
}

/// MariaDB SIGKILLed under load and started again on its datadir after 5 s: the consumer
/// reports not ready meanwhile and recovers by itself, every 201 is persisted with its
/// content, and nothing is dead-lettered (a store that is down is not the command's fault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sigkill_mid_stream_loses_nothing() {
    const TEST: &str = "mariadb_sigkill_mid_stream";
    fault_test(TEST, |began| async move {
        let mut store = MariaDb::start(&[]).await;
        progress(began, "store answers");
        let mesh = SplitChat::start_on(TEST, Some(&store.url()), None, &[]).await.expect("urls checked above");
        progress(began, "deployment started");
        let consumer_pid = mesh.consumer.pid();
        let (api, token, chat, load) = chat_under_load(&mesh, "server faults", "writes before the kill", 100).await;
        progress(began, "killing the store");
        store.kill();
        let killed = Instant::now();
        let at_kill = load.acknowledged_count();
        let not_ready =
            wait_for_readyz("the consumer with its store dead", &mesh.consumer.url, 503, Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_secs(5).saturating_sub(killed.elapsed())).await;
        let during = load.acknowledged_count() - at_kill;

        progress(began, "starting the store again");
        let restart = store.start_again().await;
        progress(began, "store answers again");
        let ready_again =
            wait_for_readyz("the consumer with its store back", &mesh.consumer.url, 200, Duration::from_secs(60)).await;
        let at_restart = load.acknowledged_count();
        let (acknowledged, unavailable) =
            assert_nothing_lost_after_restart(began, &mesh, &api, &token, chat, load, at_restart).await;
        assert_eq!(mesh.consumer.pid(), consumer_pid, "the same consumer process recovered");
        assert!(consumer_pid.is_some_and(chatmesh_e2e::processes::pid_alive), "the consumer is still running");
        eprintln!(
            "mariadb sigkill: consumer not ready {not_ready:.1?} after the kill; {during} creates acknowledged while \
             the store was dead; restart {restart:.1?}, consumer ready {ready_again:.1?} after it; {acknowledged} \
             acknowledged and persisted, {unavailable} answered 503; test {:.1?}",
            began.elapsed()
        );
    })
    .await;
}

/// How long the messages table stays locked: ten times what three attempts of a command last
/// (`CHATMESH_CONSUMER_MAX_ATTEMPTS` 3: two retry delays, 0.5 s and 1 s), so a lock counted
/// against attempts dead-letters well inside it.
const LOCK_HELD: Duration = Duration::from_secs(30);

/// The messages table write-locked (`LOCK TABLES messages WRITE`) with the consumer's lock
/// waits at zero, so every insert of the consumer fails at once with a lock wait timeout (1205) for
/// the whole lock: the creates acknowledged meanwhile are persisted after it, none is
/// dead-lettered, and the consumer's `/readyz` answers 503 while its store keeps failing and
/// 200 after. A lock wait of a second would hide a lock counted against attempts: a batch the
/// store rejects is retried one command at a time, so a second per command and per attempt,
/// and no command would get past its first attempt within the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_table_locked_dead_letters_nothing() {
    const TEST: &str = "messages_table_locked";
    fault_test(TEST, |began| async move {
        use sqlx::{Connection, Executor, Row};
        let sql = Duration::from_secs(30);
        let store = MariaDb::start(&[]).await;
        progress(began, "store answers");
        let mut mesh = SplitChat::start_on(TEST, Some(&store.url()), None, &[("CHATMESH_CONSUMER_MAX_ATTEMPTS", "3")])
            .await
            .expect("urls checked above");
        // Without lock waits from the start, the processes migrating at once would fail on each
        // other's locks: the waits go only now, and a consumer started after it has them.
        let mut admin = sqlx::MySqlConnection::connect(&store.url()).await.expect("connect to the store");
        tokio::time::timeout(
            sql,
            admin.execute("SET GLOBAL lock_wait_timeout = 0, GLOBAL innodb_lock_wait_timeout = 0"),
        )
        .await
        .expect("SET GLOBAL within 30 s")
        .expect("SET GLOBAL");
        let _ = tokio::time::timeout(sql, admin.close()).await;
        mesh.consumer.kill().await;
        mesh.consumer = mesh.start_like("chat-read", &["--api", "false", "--cron", "false"]).await;
        progress(began, "deployment started");
        let (api, token, chat, load) = chat_under_load(&mesh, "server faults", "writes before the lock", 100).await;
        progress(began, "locking the messages table");

        let database_url = mesh.env.iter().find(|(k, _)| k == "DATABASE_URL").expect("DATABASE_URL").1.clone();
        let mut locker = sqlx::MySqlConnection::connect(&database_url).await.expect("connect the locking session");
        let count = "SELECT COUNT(*) FROM messages";
        tokio::time::timeout(sql, async {
            // No wait is for the consumer: this session waits out its transactions in flight.
            locker.execute("SET SESSION lock_wait_timeout = 30").await?;
            locker.execute("LOCK TABLES messages WRITE").await
        })
        .await
        .expect("LOCK TABLES within 30 s")
        .expect("LOCK TABLES");
        let locked = Instant::now();
        progress(began, "messages table locked");
        let at_lock = load.acknowledged_count();
        let rows_at_lock: i64 = locker.fetch_one(count).await.expect("count").get(0);

        // (time into the lock, the consumer's /readyz), twice a second for the whole lock.
        let mut readiness = Vec::new();
        while locked.elapsed() < LOCK_HELD {
            readiness.push((locked.elapsed(), readyz(&mesh.consumer.url).await));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let during = load.acknowledged_count() - at_lock;
        let rows_at_unlock: i64 = locker.fetch_one(count).await.expect("count").get(0);
        tokio::time::timeout(sql, locker.execute("UNLOCK TABLES")).await.expect("UNLOCK within 30 s").expect("UNLOCK");
        let _ = tokio::time::timeout(sql, locker.close()).await;
        let unlocked = Instant::now();
        progress(began, "messages table unlocked");
        assert_eq!(rows_at_unlock, rows_at_lock, "the lock held every insert of the consumer");

        let at_unlock = load.acknowledged_count();
        wait_for("writes after the lock", Duration::from_secs(60), || load.acknowledged_count() > at_unlock + 100)
            .await;
        let (acknowledged, unavailable) = load.stop().await;
        progress(began, "reading back");

        // Every broken promise is listed before the test fails, not only the first.
        let mut broken = Vec::new();
        if during == 0 {
            broken.push("no create was acknowledged while the messages table was locked".to_owned());
        }
        let dead = chat_read(&mesh, &["dead-letters", "--limit", "100000"]);
        let dead_letters: Vec<&str> = dead.lines().filter(|line| !line.trim().is_empty()).collect();
        if let Some(first) = dead_letters.first() {
            broken.push(format!(
                "{} commands were dead-lettered; the first: {}",
                dead_letters.len(),
                first.chars().take(400).collect::<String>()
            ));
        }
        // Dead-lettered commands never arrive: no need to wait the whole two minutes for them.
        let limit = if dead_letters.is_empty() { Duration::from_secs(120) } else { Duration::from_secs(20) };
        let lost = lost(&api, &token, chat, &acknowledged, limit).await;
        let all_persisted = unlocked.elapsed();
        if !lost.is_empty() {
            broken.push(format!(
                "{} of {} acknowledged messages are not persisted with their content; first (number, stored): {:?}",
                lost.len(),
                acknowledged.len(),
                &lost[..lost.len().min(5)]
            ));
        }
        // The first attempts fail within a few seconds; from then on the store keeps failing.
        let settled = Duration::from_secs(10);
        let ready_while_failing: Vec<_> =
            readiness.iter().filter(|(at, status)| *at >= settled && *status != Some(503)).collect();
        if !ready_while_failing.is_empty() {
            broken.push(format!(
                "the consumer's /readyz did not answer 503 {} times of {} from {settled:?} into the lock on; first \
                 (time into the lock, status): {:?}",
                ready_while_failing.len(),
                readiness.iter().filter(|(at, _)| *at >= settled).count(),
                &ready_while_failing[..ready_while_failing.len().min(3)]
            ));
        }
        let ready_again = Instant::now();
        while readyz(&mesh.consumer.url).await != Some(200) && ready_again.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if readyz(&mesh.consumer.url).await != Some(200) {
            broken.push("the consumer's /readyz did not answer 200 within 60 s of the unlock".to_owned());
        }
        eprintln!(
            "messages table locked {LOCK_HELD:?}: {during} creates acknowledged during the lock, {} in all, \
             {unavailable} answered 503; {} lost, {} dead-lettered; all persisted {all_persisted:.1?} after the \
             unlock; test {:.1?}",
            acknowledged.len(),
            lost.len(),
            dead_letters.len(),
            began.elapsed()
        );
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    })
    .await;
}
