//! CometQL tables: one file per table, each a [`Table`] with a static [`TableDef`].
//!
//! The engine checks column names, turns WHERE into [`Where`], INSERT into [`Values`], and for
//! SELECT filters the rows a table returns by every condition (so `AND` works on every column of
//! every table). A table only has to answer the lookups its key columns make possible.

mod conference;
mod conference_members;
mod pipes;
mod pipes_messages;
mod pipes_settings;
mod users_auth;
mod users_in_pipes;
mod users_messages;
mod users_time;

use async_trait::async_trait;

pub use pipes_messages::MAX_HISTORY_READ;
pub use pipes_settings::log_length_key as pipes_settings_log_length_key;

use super::engine::Cx;
use super::error::{CqlError, CqlResult, code};
use super::parse::{Cond, Lit};
use crate::names::{self, PipeNameError};

/// How values of a column compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Int,
    Text,
}

/// One column of a table.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColType,
    /// What DESCRIBE shows as Type.
    pub sql_type: &'static str,
    /// Part of the key that SELECT needs in WHERE.
    pub key: bool,
}

/// A table's shape and rules.
#[derive(Debug)]
pub struct TableDef {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// Columns a DELETE may be conditioned on (empty: read-only).
    pub delete_by: &'static [&'static str],
}

impl TableDef {
    pub fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A result row: every column of the table as text, in definition order.
pub type Row = Vec<String>;

/// What an INSERT/DELETE reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Done {
    pub affected: u64,
    pub insert_id: u64,
}

/// One CometQL table.
#[async_trait]
pub trait Table: Send + Sync {
    fn def(&self) -> &'static TableDef;

    /// Rows matching at least the key conditions (the engine applies the others).
    async fn select(&self, cx: &Cx<'_>, w: &Where<'_>) -> CqlResult<Vec<Row>>;

    async fn insert(&self, _cx: &Cx<'_>, _v: &Values<'_>) -> CqlResult<Done> {
        Err(CqlError::read_only(self.def().name))
    }

    /// Called only with conditions on `def().delete_by` columns.
    async fn delete(&self, _cx: &Cx<'_>, _w: &Where<'_>) -> CqlResult<Done> {
        Err(CqlError::read_only(self.def().name))
    }

    /// `UPDATE t SET ... WHERE ...`; column names are known to exist.
    async fn update(
        &self,
        _cx: &Cx<'_>,
        _set: &[(String, Lit)],
        _w: &Where<'_>,
    ) -> CqlResult<Done> {
        Err(CqlError::new(
            code::READ_ONLY,
            format!("Table `{}` cannot be updated", self.def().name),
        ))
    }
}

/// Every table, in `SHOW TABLES` order.
pub static TABLES: &[&dyn Table] = &[
    &users_auth::UsersAuth,
    &users_time::UsersTime,
    &users_messages::UsersMessages,
    &pipes_messages::PipesMessages,
    &users_in_pipes::UsersInPipes,
    &pipes::Pipes,
    &pipes_settings::PipesSettings,
    &conference::Conference,
    &conference_members::ConferenceMembers,
];

/// Finds a table by name (case-insensitive).
pub fn find(name: &str) -> Option<&'static dyn Table> {
    TABLES
        .iter()
        .copied()
        .find(|t| t.def().name.eq_ignore_ascii_case(name))
}

fn parse_int(col: &str, lit: &Lit) -> CqlResult<i64> {
    lit.text()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .ok_or_else(|| {
            CqlError::invalid(format!(
                "`{col}` must be an integer, got {}",
                lit.text().map_or("NULL".to_string(), |t| format!("'{t}'"))
            ))
        })
}

/// The conditions of a statement, with typed accessors.
pub struct Where<'a> {
    pub def: &'static TableDef,
    pub conds: &'a [Cond],
}

impl Where<'_> {
    fn get(&self, col: &str) -> Option<&Cond> {
        self.conds.iter().find(|c| c.column == col)
    }

    pub fn has(&self, col: &str) -> bool {
        self.get(col).is_some()
    }

    /// Integer values of a condition, if present.
    pub fn ints(&self, col: &str) -> CqlResult<Option<Vec<i64>>> {
        self.get(col)
            .map(|c| c.values.iter().map(|v| parse_int(col, v)).collect())
            .transpose()
    }

    /// Integer values of a required key condition (error 13 if missing).
    pub fn require_ints(&self, col: &str) -> CqlResult<Vec<i64>> {
        self.ints(col)?.ok_or_else(|| CqlError::key_required(col))
    }

    /// Text values of a condition, if present (NULL is invalid data).
    pub fn texts(&self, col: &str) -> CqlResult<Option<Vec<String>>> {
        self.get(col)
            .map(|c| {
                c.values
                    .iter()
                    .map(|v| {
                        v.text()
                            .map(str::to_string)
                            .ok_or_else(|| CqlError::invalid(format!("`{col}` must not be NULL")))
                    })
                    .collect()
            })
            .transpose()
    }

    /// Text values of a required key condition (error 13 if missing).
    pub fn require_texts(&self, col: &str) -> CqlResult<Vec<String>> {
        self.texts(col)?.ok_or_else(|| CqlError::key_required(col))
    }

    /// Pipe names of a required `name` condition, each checked.
    pub fn require_pipes(&self) -> CqlResult<Vec<String>> {
        let names = self.require_texts("name")?;
        for n in &names {
            check_pipe(n)?;
        }
        Ok(names)
    }

    /// Conference names of a `name` condition, each checked.
    pub fn conference_names(&self) -> CqlResult<Option<Vec<String>>> {
        let Some(names) = self.texts("name")? else {
            return Ok(None);
        };
        for n in &names {
            check_conference_name(n)?;
        }
        Ok(Some(names))
    }

    /// Whether a full row matches every condition.
    pub fn matches(&self, row: &Row) -> bool {
        self.conds.iter().all(|c| {
            let (Some(i), Some(col)) = (self.def.index(&c.column), self.def.column(&c.column))
            else {
                return false;
            };
            let cell = &row[i];
            c.values.iter().any(|v| match (col.ty, v.text()) {
                (_, None) => false,
                (ColType::Int, Some(t)) => match (cell.parse::<i64>(), t.trim().parse::<i64>()) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => cell == t,
                },
                (ColType::Text, Some(t)) => cell == t,
            })
        })
    }
}

/// The values of an INSERT, by column.
pub struct Values<'a> {
    pub def: &'static TableDef,
    pub pairs: Vec<(&'static str, &'a Lit)>,
}

impl Values<'_> {
    fn get(&self, col: &str) -> Option<&Lit> {
        self.pairs
            .iter()
            .find(|(c, _)| *c == col)
            .map(|(_, v)| *v)
            .filter(|v| **v != Lit::Null)
    }

    fn required(col: &str) -> CqlError {
        CqlError::invalid(format!("field `{col}` is required"))
    }

    pub fn int(&self, col: &str) -> CqlResult<Option<i64>> {
        self.get(col).map(|v| parse_int(col, v)).transpose()
    }

    pub fn require_int(&self, col: &str) -> CqlResult<i64> {
        self.int(col)?.ok_or_else(|| Self::required(col))
    }

    pub fn text(&self, col: &str) -> Option<String> {
        self.get(col).and_then(|v| v.text()).map(str::to_string)
    }

    pub fn require_text(&self, col: &str) -> CqlResult<String> {
        self.text(col).ok_or_else(|| Self::required(col))
    }
}

/// Pipe-name errors with the old server's codes and texts.
pub fn check_pipe(name: &str) -> CqlResult<()> {
    names::check_pipe(name).map_err(|e| match e {
        PipeNameError::TooLong => CqlError::new(code::TOO_LONG, "Channel name is too long"),
        PipeNameError::TooShort => CqlError::new(code::TOO_SHORT, "Channel name is too short"),
        PipeNameError::BadChars => {
            CqlError::invalid("The channel name can contain only the characters A-Za-z0-9_-")
        }
    })
}

/// Event-name errors with the old server's codes and texts.
pub fn check_event(name: &str) -> CqlResult<()> {
    names::check_event(name).map_err(|e| match e {
        PipeNameError::TooLong => CqlError::new(code::TOO_LONG, "Channel event_name is too long"),
        _ => CqlError::invalid("The event name can contain only the characters A-Za-z0-9_-"),
    })
}

pub fn check_conference_name(name: &str) -> CqlResult<()> {
    if names::is_conference_name(name) {
        Ok(())
    } else {
        Err(CqlError::invalid(format!(
            "invalid conference name '{name}': use 1-64 characters of A-Za-z0-9_-"
        )))
    }
}
