//! `users_time (id, time)`: 0 if the user is online now, else the unix time of their last
//! disconnect, or -1 if unknown. Read-only.

use async_trait::async_trait;

use super::*;

pub struct UsersTime;

static DEF: TableDef = TableDef {
    name: "users_time",
    columns: &[
        Column {
            name: "id",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: true,
        },
        Column {
            name: "time",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
    ],
    delete_by: &[],
};

#[async_trait]
impl Table for UsersTime {
    fn def(&self) -> &'static TableDef {
        &DEF
    }

    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>> {
        let mut rows = Vec::new();
        for id in w.require_ints("id")? {
            if id < 0 {
                continue;
            }
            let time = if cx.engine.realtime.is_online(cx.dev, id) {
                0
            } else {
                cx.engine.store.last_seen(cx.dev, id).await?.unwrap_or(-1)
            };
            rows.push(vec![id.to_string(), time.to_string()]);
        }
        Ok(rows)
    }
}
