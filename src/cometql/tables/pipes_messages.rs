//! `pipes_messages (id, time, name, index, event, message, user_id)`: INSERT broadcasts to every
//! subscriber of pipe `name` and, when the pipe keeps history (pipes_settings, or a `trust_` pipe),
//! logs it. SELECT reads the history (at most 99 rows, oldest first); DELETE clears it.

use async_trait::async_trait;

use super::*;

pub struct PipesMessages;

/// Most history rows a read returns.
pub const MAX_HISTORY_READ: usize = 99;

static DEF: TableDef = TableDef {
    name: "pipes_messages",
    columns: &[
        Column {
            name: "id",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
        Column {
            name: "time",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
        Column {
            name: "name",
            ty: ColType::Text,
            sql_type: "varchar(64)",
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
        Column {
            name: "user_id",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
    ],
    delete_by: &["name"],
};

#[async_trait]
impl Table for PipesMessages {
    fn def(&self) -> &'static TableDef {
        &DEF
    }

    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>> {
        let mut rows = Vec::new();
        let mut index = 0;
        for name in w.require_pipes()? {
            for m in cx.engine.pipe_history(cx.dev, &name, cx.now).await? {
                rows.push(vec![
                    m.index.to_string(),
                    m.time.to_string(),
                    name.clone(),
                    index.to_string(),
                    m.event,
                    m.message,
                    m.user_id.to_string(),
                ]);
                index += 1;
            }
        }
        Ok(rows)
    }

    async fn insert(&self, cx: &Cx<'_>, v: &Values<'_>) -> CqlResult<Done> {
        let name = v.require_text("name")?;
        let event = v.require_text("event")?;
        let message = v.require_text("message")?;
        check_pipe(&name)?;
        check_event(&event)?;
        cx.engine
            .publish_to_pipe(cx, &name, &event, &message, 0)
            .await?;
        Ok(Done {
            affected: 1,
            insert_id: 0,
        })
    }

    async fn delete(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Done> {
        let mut affected = 0;
        for name in w.require_pipes()? {
            affected += cx.engine.store.clear_pipe_messages(cx.dev, &name).await?;
        }
        Ok(Done {
            affected,
            insert_id: 0,
        })
    }
}
