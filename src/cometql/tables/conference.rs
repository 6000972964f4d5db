//! `conference (name, user_id, caller_id, message, profile, stream, node)`: invitations
//! (contract 2.1/2.2). INSERT stores one invitation and sends the invited user the `sys_sipCall`
//! event (queued while offline). DELETE removes invitations and hangs up the matching live calls.

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::conference::callpipe::{call_pipe, sip_number};
use crate::store::ConferenceRow;

pub struct Conference;

/// Longest `stream` value (an RTMP URL).
const MAX_STREAM_LEN: usize = 1024;
/// Longest invitation message.
const MAX_MESSAGE_LEN: usize = 4096;

static DEF: TableDef = TableDef {
    name: "conference",
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
            name: "caller_id",
            ty: ColType::Int,
            sql_type: "int(11)",
            key: false,
        },
        Column {
            name: "message",
            ty: ColType::Text,
            sql_type: "text",
            key: false,
        },
        Column {
            name: "profile",
            ty: ColType::Text,
            sql_type: "varchar(64)",
            key: false,
        },
        Column {
            name: "stream",
            ty: ColType::Text,
            sql_type: "varchar(1024)",
            key: false,
        },
        Column {
            name: "node",
            ty: ColType::Text,
            sql_type: "varchar(255)",
            key: false,
        },
    ],
    delete_by: &["name", "user_id"],
};

#[async_trait]
impl Table for Conference {
    fn def(&self) -> &'static TableDef {
        &DEF
    }

    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>> {
        let names = w
            .conference_names()?
            .ok_or_else(|| CqlError::key_required("name"))?;
        let mut rows = Vec::new();
        for name in names {
            for r in cx.engine.store.conference_rows(cx.dev, &name).await? {
                rows.push(vec![
                    r.name,
                    r.user_id.to_string(),
                    r.caller_id.to_string(),
                    r.message,
                    r.profile,
                    r.stream,
                    r.node,
                ]);
            }
        }
        Ok(rows)
    }

    async fn insert(&self, cx: &Cx<'_>, v: &Values<'_>) -> CqlResult<Done> {
        let name = v.require_text("name")?;
        let user_id = v.require_int("user_id")?;
        let message = v.require_text("message")?;
        let caller_id = v.int("caller_id")?.unwrap_or(0);
        let profile = v.text("profile").unwrap_or_else(|| "default".to_string());
        let stream = v.text("stream").unwrap_or_default();
        check_conference_name(&name)?;
        if user_id < 0 {
            return Err(CqlError::invalid("The user_id field must be non-negative"));
        }
        if caller_id < 0 {
            return Err(CqlError::invalid(
                "The caller_id field must be non-negative",
            ));
        }
        let s = &cx.engine.settings;
        if !s.profiles.contains_key(&profile) {
            return Err(CqlError::invalid(format!(
                "unknown profile '{profile}' (known: {})",
                s.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if message.len() > MAX_MESSAGE_LEN {
            return Err(CqlError::new(
                code::TOO_LONG,
                format!("message is too long (at most {MAX_MESSAGE_LEN} bytes)"),
            ));
        }
        if stream.len() > MAX_STREAM_LEN {
            return Err(CqlError::new(
                code::TOO_LONG,
                format!("stream is too long (at most {MAX_STREAM_LEN} bytes)"),
            ));
        }
        // An RTMP URL broadcasts this conference there (instead of its profile's URL).
        if stream.starts_with("rtmp") {
            let url = crate::broadcast::expand_url(&stream, cx.dev, &name);
            crate::broadcast::rtmp::RtmpUrl::parse(&url)
                .map_err(|e| CqlError::invalid(format!("stream: {e}")))?;
        }
        // The media node browsers call: this server, or in a cluster the conference's node.
        let (node, sip_host, sip_port) = match &s.cluster {
            None => (s.node.clone(), s.sip_host.clone(), s.sip_port),
            Some(cluster) => {
                // Where its members are; else (a store read) where its invitations point.
                let n = match cluster.running(cx.dev, &name) {
                    Some(n) => n,
                    None => {
                        let existing = cx.engine.store.conference_rows(cx.dev, &name).await?;
                        cluster
                            .place(cx.dev, &name, &existing)
                            .map_err(|why| CqlError::new(code::INTERNAL, why))?
                    }
                };
                (n.address(), n.sip_host, n.sip_port)
            }
        };
        let row = ConferenceRow {
            name: name.clone(),
            user_id,
            caller_id,
            message: message.clone(),
            profile: profile.clone(),
            stream,
            node,
            time: cx.now,
        };
        cx.engine.store.put_conference_row(cx.dev, &row).await?;

        let number = sip_number(cx.dev, &name, &profile);
        let pipe = call_pipe(&number, &sip_host, sip_port, cx.dev, &s.pipesalt);
        let data = json!({
            "message": message,
            "sys": {
                "callKey": uuid::Uuid::new_v4().to_string(),
                "callPipe": pipe,
                "caller_id": caller_id,
                "conference": "true",
                "conference_name": name,
                "mode": profile,
                "serverName": sip_host,
                "serverPort": sip_port,
                "sipNumber": number,
                "stream": 0,
            }
        });
        cx.engine
            .deliver_to_user(cx, user_id, "sys_sipCall", data)
            .await?;
        Ok(Done {
            affected: 1,
            insert_id: 0,
        })
    }

    /// A kick: removes the invitation(s) and hangs up the matching live calls. Without `user_id`
    /// it ends the whole conference.
    async fn delete(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Done> {
        let names = w
            .conference_names()?
            .ok_or_else(|| CqlError::key_required("name"))?;
        let users = w.ints("user_id")?;
        let mut affected = 0;
        for name in &names {
            match &users {
                None => {
                    affected += cx
                        .engine
                        .store
                        .delete_conference_rows(cx.dev, name, None)
                        .await?;
                    cx.engine.conferences.hangup(
                        cx.dev,
                        name,
                        None,
                        "conference ended by the backend",
                    );
                }
                Some(users) => {
                    for u in users {
                        affected += cx
                            .engine
                            .store
                            .delete_conference_rows(cx.dev, name, Some(*u))
                            .await?;
                        cx.engine.conferences.hangup(
                            cx.dev,
                            name,
                            Some(*u),
                            "removed from the conference by the backend",
                        );
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
