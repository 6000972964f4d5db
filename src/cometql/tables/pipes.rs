//! `pipes (name, users)`: how many connections are subscribed to each pipe. Read-only.

use async_trait::async_trait;

use super::*;

pub struct Pipes;

static DEF: TableDef = TableDef {
    name: "pipes",
    columns: &[
        Column {
            name: "name",
            ty: ColType::Text,
            sql_type: "varchar(64)",
            key: true,
        },
        Column {
            name: "users",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
    ],
    delete_by: &[],
};

#[async_trait]
impl Table for Pipes {
    fn def(&self) -> &'static TableDef {
        &DEF
    }

    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>> {
        Ok(w.require_pipes()?
            .into_iter()
            .map(|name| {
                let n = cx.engine.realtime.pipe_subscriber_count(cx.dev, &name);
                vec![name, n.to_string()]
            })
            .collect())
    }
}
