//! `users_auth (id, hash)`: the per-user key that authorizes comet WebSocket connections and is
//! the user's SIP password.

use async_trait::async_trait;

use super::*;
use crate::names::{HashError, check_hash};

pub struct UsersAuth;

static DEF: TableDef = TableDef {
    name: "users_auth",
    columns: &[
        Column {
            name: "id",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: true,
        },
        Column {
            name: "hash",
            ty: ColType::Text,
            sql_type: "varchar(32)",
            key: false,
        },
    ],
    delete_by: &["id"],
};

#[async_trait]
impl Table for UsersAuth {
    fn def(&self) -> &'static TableDef {
        &DEF
    }

    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>> {
        let mut rows = Vec::new();
        for id in w.require_ints("id")? {
            if id <= 0 {
                continue;
            }
            if let Some(hash) = cx.engine.store.user_hash(cx.dev, id).await? {
                rows.push(vec![id.to_string(), hash]);
            }
        }
        Ok(rows)
    }

    async fn insert(&self, cx: &Cx<'_>, v: &Values<'_>) -> CqlResult<Done> {
        let id = v.require_int("id")?;
        let hash = v.require_text("hash")?;
        if id <= 0 {
            return Err(CqlError::invalid("The id field must be positive"));
        }
        check_hash(&hash).map_err(|e| match e {
            HashError::BadChars => {
                CqlError::invalid("Contains an invalid characters in the string hash")
            }
            HashError::TooLong => CqlError::new(code::TOO_LONG, "Hash string is too long"),
            HashError::Empty => CqlError::invalid("The hash must not be empty"),
        })?;
        cx.engine.store.set_user_hash(cx.dev, id, &hash).await?;
        Ok(Done {
            affected: 1,
            insert_id: id as u64,
        })
    }

    /// Removes the key, closes the user's WebSocket connections and hangs up their calls.
    async fn delete(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Done> {
        let mut affected = 0;
        for id in w.require_ints("id")? {
            if cx.engine.store.delete_user_hash(cx.dev, id).await? {
                affected += 1;
            }
            cx.engine.realtime.disconnect_user(cx.dev, id);
            cx.engine
                .conferences
                .hangup_user(cx.dev, id, "user key deleted");
        }
        Ok(Done {
            affected,
            insert_id: 0,
        })
    }
}
