//! `users_in_pipes (name, user_id, user_uuid, user_agent, ip, origin, language)`: the live
//! connections subscribed to a pipe. Read-only.

use async_trait::async_trait;

use super::*;

pub struct UsersInPipes;

static DEF: TableDef = TableDef {
    name: "users_in_pipes",
    columns: &[
        Column {
            name: "name",
            ty: ColType::Text,
            sql_type: "varchar(64)",
            key: true,
        },
        Column {
            name: "user_id",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
        Column {
            name: "user_uuid",
            ty: ColType::Text,
            sql_type: "varchar(32)",
            key: false,
        },
        Column {
            name: "user_agent",
            ty: ColType::Text,
            sql_type: "varchar(250)",
            key: false,
        },
        Column {
            name: "ip",
            ty: ColType::Text,
            sql_type: "varchar(45)",
            key: false,
        },
        Column {
            name: "origin",
            ty: ColType::Text,
            sql_type: "varchar(250)",
            key: false,
        },
        Column {
            name: "language",
            ty: ColType::Text,
            sql_type: "varchar(64)",
            key: false,
        },
    ],
    delete_by: &[],
};

#[async_trait]
impl Table for UsersInPipes {
    fn def(&self) -> &'static TableDef {
        &DEF
    }

    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>> {
        let mut rows = Vec::new();
        for name in w.require_pipes()? {
            for s in cx.engine.realtime.pipe_subscribers(cx.dev, &name) {
                rows.push(vec![
                    name.clone(),
                    s.user_id.to_string(),
                    s.user_uuid,
                    s.user_agent,
                    s.ip,
                    s.origin,
                    s.language,
                ]);
            }
        }
        Ok(rows)
    }
}
