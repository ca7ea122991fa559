//! Fixtures written straight into a stopped standalone server's SQLite file: what a benchmark
//! needs in place before it measures something else (clearly not the create path).

use sqlx::Row;

/// Writes messages 1..=`messages` into chat `chat_number` of the application `token` in the
/// SQLite file at `path` (the server stopped), each with `content(number)`, their change
/// numbers and the chat's counts, as the consumer would have. The server indexes them for
/// search at its next start (they lie above the index's watermark).
pub async fn fill_directly(
    path: &std::path::Path,
    token: &str,
    chat_number: i64,
    messages: i64,
    content: impl Fn(i64) -> String,
) -> anyhow::Result<()> {
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await?;
    let chat_id: i64 = sqlx::query(
        "SELECT c.id FROM chats c JOIN applications a ON a.id = c.application_id WHERE a.token = ? AND c.number = ?",
    )
    .bind(token)
    .bind(chat_number)
    .fetch_one(&pool)
    .await?
    .try_get(0)?;
    let now = shared::now_millis();
    let rows = 500i64;
    let mut tx = pool.begin().await?;
    for first in (1..=messages).step_by(rows as usize) {
        let last = (first + rows - 1).min(messages);
        let sql = format!(
            "INSERT INTO messages (chat_id, number, content, created_at, updated_at, created_seq) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?)"; (last - first + 1) as usize].join(", ")
        );
        let mut query = sqlx::query(&sql);
        for number in first..=last {
            query = query.bind(chat_id).bind(number).bind(content(number)).bind(now).bind(now).bind(number);
        }
        query.execute(&mut *tx).await?;
    }
    sqlx::query("UPDATE chats SET last_change = ?, live_count = ?, messages_count = ? WHERE id = ?")
        .bind(messages)
        .bind(messages)
        .bind(messages)
        .bind(chat_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    pool.close().await;
    Ok(())
}
