//! `users_messages (id, index, event, message)`: personal messages. INSERT delivers to every live
//! connection of the user on pipe `msg`, or queues the message while the user is offline
//! (10 per user, 120 s). SELECT shows the queue; DELETE clears it.

use async_trait::async_trait;

use super::*;

pub struct UsersMessages;

static DEF: TableDef = TableDef {
    name: "users_messages",
    columns: &[
        Column {
            name: "id",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: true,
        },
        Column {
            name: "index",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
        Column {
            name: "event",
            ty: ColType::Text,
            sql_type: "varchar(64)",
            key: false,
        },
        Column {
            name: "message",
            ty: ColType::Text,
            sql_type: "text",
            key: false,
        },
    ],
    delete_by: &["id"],
};

#[async_trait]
impl Table for UsersMessages {
    fn def(&self) -> &'static TableDef {
        &DEF
    }

    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>> {
        let mut rows = Vec::new();
        for id in w.require_ints("id")? {
            for m in cx
                .engine
                .store
                .user_messages(cx.dev, id, cx.queue_horizon())
                .await?
            {
                rows.push(vec![
                    id.to_string(),
                    m.index.to_string(),
                    m.event,
                    m.message,
                ]);
            }
        }
        Ok(rows)
    }

    async fn insert(&self, cx: &Cx<'_>, v: &Values<'_>) -> CqlResult<Done> {
        let id = v.require_int("id")?;
        let event = v.require_text("event")?;
        let message = v.require_text("message")?;
        if id < 0 {
            return Err(CqlError::invalid("The id field must be non-negative"));
        }
        check_event(&event)?;
        cx.engine
            .deliver_to_user(cx, id, &event, serde_json::Value::String(message))
            .await?;
        Ok(Done {
            affected: 1,
            insert_id: id as u64,
        })
    }

    async fn delete(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Done> {
        let mut affected = 0;
        for id in w.require_ints("id")? {
            affected += cx.engine.store.clear_user_messages(cx.dev, id).await?;
        }
        Ok(Done {
            affected,
            insert_id: 0,
        })
    }
}
