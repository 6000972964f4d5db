//! `conference_members (name, user_id, join_time, last_talking)`: who is in a media conference
//! now, from the conference runtime (not who was invited). join_time and last_talking are seconds
//! ago; last_talking is `N/A` for a member who never spoke. DELETE hangs members up.

use async_trait::async_trait;

use super::*;

pub struct ConferenceMembers;

static DEF: TableDef = TableDef {
    name: "conference_members",
    columns: &[
        Column {
            name: "name",
            ty: ColType::Text,
            sql_type: "varchar(64)",
            key: false,
        },
        Column {
            name: "user_id",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
        Column {
            name: "join_time",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
        Column {
            name: "last_talking",
            ty: ColType::Text,
            sql_type: "varchar(16)",
            key: false,
        },
    ],
    delete_by: &["name", "user_id"],
};

#[async_trait]
impl Table for ConferenceMembers {
    fn def(&self) -> &'static TableDef {
        &DEF
    }

    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>> {
        let reg = &cx.engine.conferences;
        let members = match w.conference_names()? {
            None => reg.members(cx.dev, None, cx.instant),
            Some(names) => names
                .iter()
                .flat_map(|n| reg.members(cx.dev, Some(n), cx.instant))
                .collect(),
        };
        Ok(members
            .into_iter()
            .map(|m| {
                vec![
                    m.name,
                    m.user_id.to_string(),
                    m.joined_for.as_secs().to_string(),
                    m.silent_for
                        .map_or_else(|| "N/A".to_string(), |d| d.as_secs().to_string()),
                ]
            })
            .collect())
    }

    async fn insert(&self, _cx: &Cx<'_>, _v: &Values<'_>) -> CqlResult<Done> {
        Err(CqlError::new(
            code::READ_ONLY,
            "insert into `conference_members` is not possible: INSERT INTO conference invites a \
             user, who then joins by calling in",
        ))
    }

    /// Hangs up live members (the invitation stays; DELETE FROM conference removes both).
    async fn delete(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Done> {
        let names = w
            .conference_names()?
            .ok_or_else(|| CqlError::key_required("name"))?;
        let users = w.ints("user_id")?;
        let mut affected = 0;
        for name in &names {
            match &users {
                None => {
                    affected += cx.engine.conferences.hangup(
                        cx.dev,
                        name,
                        None,
                        "conference ended by the backend",
                    ) as u64
                }
                Some(users) => {
                    for u in users {
                        affected += cx.engine.conferences.hangup(
                            cx.dev,
                            name,
                            Some(*u),
                            "removed from the conference by the backend",
                        ) as u64;
                    }
                }
            }
        }
        Ok(Done {
            affected,
            insert_id: 0,
        })
    }
}
