//! `conference_members`: who is in a media conference now, from the conference runtime (not who
//! was invited), and what the backend decided about them.
//!
//! Columns: the four of CppComet (name, user_id, join_time and last_talking in seconds ago,
//! last_talking `N/A` for a member who never spoke), then talking (0/1), energy (0-100), audio,
//! video, deaf, video_floor (0/1), layout and max_duration (per conference) and profile.
//! `UPDATE` moderates (audio, video, deaf, video_floor per member; layout and max_duration per
//! conference); `DELETE` hangs members up.

use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::config::LAYOUTS;

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
        Column {
            name: "talking",
            ty: ColType::Int,
            sql_type: "tinyint(1)",
            key: false,
        },
        Column {
            name: "energy",
            ty: ColType::Int,
            sql_type: "tinyint(3)",
            key: false,
        },
        Column {
            name: "audio",
            ty: ColType::Int,
            sql_type: "tinyint(1)",
            key: false,
        },
        Column {
            name: "video",
            ty: ColType::Int,
            sql_type: "tinyint(1)",
            key: false,
        },
        Column {
            name: "deaf",
            ty: ColType::Int,
            sql_type: "tinyint(1)",
            key: false,
        },
        Column {
            name: "layout",
            ty: ColType::Text,
            sql_type: "varchar(16)",
            key: false,
        },
        Column {
            name: "video_floor",
            ty: ColType::Int,
            sql_type: "tinyint(1)",
            key: false,
        },
        Column {
            name: "profile",
            ty: ColType::Text,
            sql_type: "varchar(64)",
            key: false,
        },
        Column {
            name: "max_duration",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
    ],
    delete_by: &["name", "user_id"],
};

fn flag(b: bool) -> String {
    (b as u8).to_string()
}

/// A 0/1 value of a flag column.
fn parse_flag(col: &str, v: &Lit) -> CqlResult<bool> {
    match v.text().map(str::trim) {
        Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        _ => Err(CqlError::invalid(format!(
            "`{col}` takes 0 or 1, got {}",
            v.text().map_or("NULL".to_string(), |t| format!("'{t}'"))
        ))),
    }
}

/// Members' names and users from WHERE: name is required, user_id optional.
fn targets(w: &Where<'_>) -> CqlResult<(Vec<String>, Option<Vec<i64>>)> {
    let names = w
        .conference_names()?
        .ok_or_else(|| CqlError::key_required("name"))?;
    Ok((names, w.ints("user_id")?))
}

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
        let profiles = &cx.engine.settings.profiles;
        Ok(members
            .into_iter()
            .map(|m| {
                let layout = m.layout.clone().unwrap_or_else(|| {
                    profiles
                        .get(&m.profile)
                        .map_or_else(|| "active-speaker".to_string(), |p| p.layout.clone())
                });
                vec![
                    m.name,
                    m.user_id.to_string(),
                    m.joined_for.as_secs().to_string(),
                    m.silent_for
                        .map_or_else(|| "N/A".to_string(), |d| d.as_secs().to_string()),
                    flag(m.talking),
                    m.energy.to_string(),
                    flag(m.flags.audio),
                    flag(m.flags.video),
                    flag(m.flags.deaf),
                    layout,
                    flag(m.flags.video_floor),
                    m.profile,
                    m.max_duration.map_or(0, |d| d.as_secs()).to_string(),
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
        let (names, users) = targets(w)?;
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

    /// Moderation: `SET audio|video|deaf|video_floor = 0|1 WHERE name = .. AND user_id = ..`,
    /// `SET layout = '..' | max_duration = N WHERE name = ..`. Takes effect within one mixer tick.
    async fn update(&self, cx: &Cx<'_>, set: &[(String, Lit)], w: &Where<'_>) -> CqlResult<Done> {
        for c in w.conds {
            if c.column != "name" && c.column != "user_id" {
                return Err(CqlError::not_implemented(format!(
                    "UPDATE conference_members can be conditioned only on name and user_id, not `{}`",
                    c.column
                )));
            }
        }
        let (names, users) = targets(w)?;
        let mut flags: Vec<(&str, bool)> = Vec::new();
        let mut layout = None;
        let mut max_duration = None;
        for (col, v) in set {
            match col.as_str() {
                "audio" | "video" | "deaf" | "video_floor" => {
                    flags.push((col.as_str(), parse_flag(col, v)?))
                }
                "layout" => {
                    let l = v.text().unwrap_or("");
                    if !LAYOUTS.contains(&l) {
                        return Err(CqlError::invalid(format!(
                            "`layout` is one of {}, got '{l}'",
                            LAYOUTS.join(", ")
                        )));
                    }
                    layout = Some(l.to_string());
                }
                "max_duration" => {
                    let secs = v
                        .text()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                        .filter(|s| *s <= 31 * 24 * 3600)
                        .ok_or_else(|| {
                            CqlError::invalid(
                                "`max_duration` takes seconds, 0 to 2678400 (0: no limit)",
                            )
                        })?;
                    max_duration = Some(Duration::from_secs(secs));
                }
                other => {
                    return Err(CqlError::new(
                        code::READ_ONLY,
                        format!("column `{other}` of conference_members cannot be set"),
                    ));
                }
            }
        }
        if !flags.is_empty() && users.is_none() {
            return Err(CqlError::key_required("user_id"));
        }
        if (layout.is_some() || max_duration.is_some()) && users.is_some() {
            return Err(CqlError::invalid(
                "layout and max_duration belong to the conference: omit user_id",
            ));
        }
        let reg = &cx.engine.conferences;
        let mut affected = 0;
        for name in &names {
            if let Some(users) = &users {
                for u in users {
                    let found = reg.update_flags(cx.dev, name, *u, |f| {
                        for (col, on) in &flags {
                            match *col {
                                "audio" => f.audio = *on,
                                "video" => f.video = *on,
                                "deaf" => f.deaf = *on,
                                _ => f.video_floor = *on,
                            }
                        }
                    });
                    affected += found as u64;
                }
            }
            let mut conf_hit = false;
            if let Some(l) = &layout {
                conf_hit |= reg.set_layout(cx.dev, name, l);
            }
            if let Some(d) = max_duration {
                conf_hit |= reg.set_max_duration(cx.dev, name, d);
            }
            affected += conf_hit as u64;
        }
        Ok(Done {
            affected,
            insert_id: 0,
        })
    }
}
