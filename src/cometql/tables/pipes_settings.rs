//! `pipes_settings (name, length)`: how many messages a pipe keeps as history (0..=1000).

use async_trait::async_trait;

use super::*;

pub struct PipesSettings;

/// Longest history a pipe may keep.
pub const MAX_LOG_LENGTH: i64 = 1000;

static DEF: TableDef = TableDef {
    name: "pipes_settings",
    columns: &[
        Column {
            name: "name",
            ty: ColType::Text,
            sql_type: "varchar(64)",
            key: true,
        },
        Column {
            name: "length",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
    ],
    delete_by: &["name"],
};

/// The settings key of a pipe's history length.
pub fn log_length_key(pipe: &str) -> String {
    format!("pipe_log_length:{pipe}")
}

#[async_trait]
impl Table for PipesSettings {
    fn def(&self) -> &'static TableDef {
        &DEF
    }

    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>> {
        let mut rows = Vec::new();
        for name in w.require_pipes()? {
            if let Some(len) = cx
                .engine
                .store
                .setting(cx.dev, &log_length_key(&name))
                .await?
            {
                rows.push(vec![name, len]);
            }
        }
        Ok(rows)
    }

    async fn insert(&self, cx: &Cx<'_>, v: &Values<'_>) -> CqlResult<Done> {
        let name = v.require_text("name")?;
        check_pipe(&name)?;
        let length = v.int("length")?.unwrap_or(0).clamp(0, MAX_LOG_LENGTH);
        cx.engine
            .store
            .set_setting(cx.dev, &log_length_key(&name), Some(&length.to_string()))
            .await?;
        Ok(Done {
            affected: 1,
            insert_id: 0,
        })
    }

    /// Removes the setting and the pipe's history.
    async fn delete(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Done> {
        let mut affected = 0;
        for name in w.require_pipes()? {
            if cx
                .engine
                .store
                .setting(cx.dev, &log_length_key(&name))
                .await?
                .is_some()
            {
                affected += 1;
            }
            cx.engine
                .store
                .set_setting(cx.dev, &log_length_key(&name), None)
                .await?;
            cx.engine.store.clear_pipe_messages(cx.dev, &name).await?;
        }
        Ok(Done {
            affected,
            insert_id: 0,
        })
    }
}
