//! From SQL text to a CometQL statement.
//!
//! sqlparser (MySQL dialect) does the lexing and parsing; this module narrows its AST to the small
//! grammar CometQL supports and turns everything else into the contract's error codes: syntax
//! errors are 3, SQL we understand but do not support (OR, ORDER BY, joins, `<`, LIKE, ...) is 2,
//! and the size limits are 11, 17, 18, 19, 20 and 21. Names may be quoted with backticks, single or
//! double quotes anywhere a name is expected.

use sqlparser::ast::{
    self, BinaryOperator, Expr, FromTable, FunctionArguments, GroupByExpr, InTarget, LimitClause,
    ObjectName, SelectItem, SetExpr, ShowStatementFilter, TableFactor, TableObject, UnaryOperator,
    Value,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::error::{CqlError, CqlResult, code};

/// Queries of this many bytes or more are refused (error 11).
pub const MAX_QUERY_LEN: usize = 9000;
/// Queries of this many bytes or fewer are refused (error 17).
pub const MIN_QUERY_LEN: usize = 3;
/// Most WHERE conditions (error 18).
pub const MAX_CONDITIONS: usize = 10;
/// Most values over all WHERE conditions (error 19).
pub const MAX_CONDITION_VALUES: usize = 4000;
/// Most selected columns (error 20).
pub const MAX_COLUMNS: usize = 20;
/// Most INSERT column names (error 21) and values (error 19).
pub const MAX_INSERT_NAMES: usize = 20;

/// A literal value as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lit {
    /// A number, as text (`-5`, `3.5`).
    Num(String),
    /// A quoted string, unescaped.
    Str(String),
    Bool(bool),
    Null,
}

impl Lit {
    /// The value as text, `None` for NULL.
    pub fn text(&self) -> Option<&str> {
        match self {
            Lit::Num(s) | Lit::Str(s) => Some(s),
            Lit::Bool(true) => Some("1"),
            Lit::Bool(false) => Some("0"),
            Lit::Null => None,
        }
    }
}

/// `column = value` or `column IN (values)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// Column name, lower-cased.
    pub column: String,
    pub values: Vec<Lit>,
}

/// A `SELECT ... FROM table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    pub table: String,
    /// `None` for `*`; otherwise (label as written, column lower-cased).
    pub columns: Option<Vec<(String, String)>>,
    pub conds: Vec<Cond>,
    /// (offset, count).
    pub limit: Option<(u64, u64)>,
}

/// What a `SELECT` without `FROM` may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    /// `@@name` or `@@session.name` (name lower-cased, scope dropped).
    Variable(String),
    /// `DATABASE()` / `SCHEMA()`.
    Database,
    /// `VERSION()`.
    Version,
    /// `CONNECTION_ID()`.
    ConnectionId,
    /// `USER()` / `CURRENT_USER()`.
    User,
    /// `NOW()` / `UNIX_TIMESTAMP()`.
    UnixTime,
    Lit(Lit),
}

/// One CometQL statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    Select(Select),
    /// `SELECT @@version_comment`, `SELECT DATABASE()`, `SELECT 1`: (label, what).
    Scalars(Vec<(String, Scalar)>),
    Insert {
        table: String,
        /// Lower-cased column names, or `None` for "all columns in order".
        columns: Option<Vec<String>>,
        values: Vec<Lit>,
    },
    Delete {
        table: String,
        conds: Vec<Cond>,
    },
    Update {
        table: String,
        /// (column lower-cased, value).
        set: Vec<(String, Lit)>,
        conds: Vec<Cond>,
    },
    ShowTables,
    ShowDatabases,
    ShowColumns(String),
    /// `SHOW VARIABLES [LIKE 'pattern']`.
    ShowVariables(Option<String>),
    /// `SHOW [GLOBAL|SESSION] STATUS [LIKE 'pattern']`.
    ShowStatus(Option<String>),
    /// `USE db`.
    Use(String),
    /// Any `SET ...`: accepted and ignored.
    Set,
    /// Only comments or `;`.
    Empty,
}

fn not_supported(what: &str) -> CqlError {
    CqlError::not_implemented(format!("{what} is not supported by CometQL"))
}

/// Parses one query. Length limits are checked on the raw bytes first.
pub fn parse(sql: &str) -> CqlResult<Stmt> {
    if sql.trim().len() <= MIN_QUERY_LEN {
        return Err(CqlError::new(code::TOO_SHORT, "Data is too short"));
    }
    if sql.len() >= MAX_QUERY_LEN {
        return Err(CqlError::new(
            code::TOO_LONG,
            format!("Data is too long (queries must be shorter than {MAX_QUERY_LEN} bytes)"),
        ));
    }
    let mut stmts = Parser::parse_sql(&MySqlDialect {}, sql)
        .map_err(|e| CqlError::syntax(format!("Syntax error in query: {e}")))?;
    match stmts.len() {
        0 => Ok(Stmt::Empty),
        1 => statement(stmts.remove(0)),
        _ => Err(CqlError::not_implemented(
            "several statements in one query are not supported; send them one by one",
        )),
    }
}

fn statement(s: ast::Statement) -> CqlResult<Stmt> {
    use ast::Statement as S;
    match s {
        S::Query(q) => query(*q),
        S::Insert(i) => insert(i),
        S::Delete(d) => delete(d),
        S::Update(u) => update(u),
        S::ShowTables { .. } => Ok(Stmt::ShowTables),
        S::ShowDatabases { .. } | S::ShowSchemas { .. } => Ok(Stmt::ShowDatabases),
        S::ShowColumns { show_options, .. } => {
            let name = show_options
                .show_in
                .and_then(|i| i.parent_name)
                .ok_or_else(|| CqlError::syntax("SHOW COLUMNS needs FROM <table>"))?;
            Ok(Stmt::ShowColumns(object_name(&name)?))
        }
        S::ExplainTable { table_name, .. } => Ok(Stmt::ShowColumns(object_name(&table_name)?)),
        S::ShowVariables { filter, .. } => Ok(Stmt::ShowVariables(like(filter)?)),
        S::ShowStatus { filter, .. } => Ok(Stmt::ShowStatus(like(filter)?)),
        S::Set(_) => Ok(Stmt::Set),
        S::Use(u) => match u {
            ast::Use::Object(n) | ast::Use::Database(n) | ast::Use::Schema(n) => {
                Ok(Stmt::Use(object_name(&n)?))
            }
            _ => Err(not_supported("this USE form")),
        },
        S::StartTransaction { .. } | S::Commit { .. } | S::Rollback { .. } => Err(not_supported(
            "transactions (every CometQL statement takes effect on its own)",
        )),
        other => Err(not_supported(&format!(
            "`{}`",
            other
                .to_string()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ))),
    }
}

fn like(filter: Option<ShowStatementFilter>) -> CqlResult<Option<String>> {
    match filter {
        None => Ok(None),
        Some(ShowStatementFilter::Like(p)) | Some(ShowStatementFilter::NoKeyword(p)) => Ok(Some(p)),
        Some(_) => Err(not_supported("this SHOW filter")),
    }
}

/// The last part of a (possibly qualified, e.g. `CometQL_v1.users_auth`) name.
fn object_name(n: &ObjectName) -> CqlResult<String> {
    n.0.last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .ok_or_else(|| CqlError::syntax(format!("`{n}` is not a name")))
}

fn query(q: ast::Query) -> CqlResult<Stmt> {
    if q.with.is_some() {
        return Err(not_supported("WITH"));
    }
    if q.order_by.is_some() {
        return Err(CqlError::not_implemented(
            "Token ORDER BY is not yet implemented",
        ));
    }
    if q.fetch.is_some() || !q.locks.is_empty() {
        return Err(not_supported("FETCH / FOR UPDATE"));
    }
    let limit = match q.limit_clause {
        None => None,
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(not_supported("LIMIT BY"));
            }
            let count = match limit {
                Some(e) => number(&e, "LIMIT")?,
                None => u64::MAX,
            };
            let off = match offset {
                Some(o) => number(&o.value, "OFFSET")?,
                None => 0,
            };
            Some((off, count))
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
            Some((number(&offset, "LIMIT")?, number(&limit, "LIMIT")?))
        }
    };
    let select = match *q.body {
        SetExpr::Select(s) => *s,
        SetExpr::SetOperation { .. } => return Err(not_supported("UNION")),
        _ => return Err(not_supported("this query form")),
    };
    if select.distinct.is_some()
        || select.having.is_some()
        || !matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
    {
        return Err(not_supported("DISTINCT / GROUP BY / HAVING"));
    }
    if select.from.is_empty() {
        if select.selection.is_some() {
            return Err(CqlError::syntax(
                "Select query has error: WHERE without FROM",
            ));
        }
        return scalars(select.projection);
    }
    if select.from.len() > 1 || !select.from[0].joins.is_empty() {
        return Err(not_supported("joins"));
    }
    let table = match &select.from[0].relation {
        TableFactor::Table { name, .. } => object_name(name)?,
        _ => return Err(not_supported("subqueries and table functions")),
    };
    let columns = projection(select.projection)?;
    let conds = conditions(select.selection)?;
    Ok(Stmt::Select(Select {
        table,
        columns,
        conds,
        limit,
    }))
}

fn number(e: &Expr, what: &str) -> CqlResult<u64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.parse().ok(),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| CqlError::syntax(format!("{what} needs a non-negative integer, got `{e}`")))
}

/// A column reference: an identifier, a quoted string in a name position, or `table.column`.
fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.to_ascii_lowercase()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.to_ascii_lowercase()),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                Some(s.to_ascii_lowercase())
            }
            _ => None,
        },
        Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

fn projection(items: Vec<SelectItem>) -> CqlResult<Option<Vec<(String, String)>>> {
    if items.len() == 1 && matches!(items[0], SelectItem::Wildcard(_)) {
        return Ok(None);
    }
    if items.len() > MAX_COLUMNS {
        return Err(CqlError::new(
            code::TOO_MANY_COLUMNS,
            format!("Error in columns list, too many columns (at most {MAX_COLUMNS})."),
        ));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(items.len());
    for item in items {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value)),
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                return Err(not_supported("`*` mixed with other columns"));
            }
            SelectItem::ExprWithAliases { .. } => return Err(not_supported("multiple aliases")),
        };
        let col = column_name(&expr)
            .ok_or_else(|| not_supported(&format!("the expression `{expr}` in a select list")))?;
        let label = alias.unwrap_or_else(|| match &expr {
            Expr::Identifier(i) => i.value.clone(),
            _ => col.clone(),
        });
        if out.iter().any(|(_, c)| *c == col) {
            return Err(CqlError::new(
                code::KEY_REQUIRED,
                format!("Each column in the select used only once (`{col}`)"),
            ));
        }
        out.push((label, col));
    }
    Ok(Some(out))
}

fn scalars(items: Vec<SelectItem>) -> CqlResult<Stmt> {
    if items.len() > MAX_COLUMNS {
        return Err(CqlError::new(
            code::TOO_MANY_COLUMNS,
            format!("Error in columns list, too many columns (at most {MAX_COLUMNS})."),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value)),
            _ => return Err(CqlError::syntax("Select query has error: `*` needs FROM")),
        };
        let label = alias.unwrap_or_else(|| expr.to_string());
        out.push((label, scalar(&expr)?));
    }
    Ok(Stmt::Scalars(out))
}

fn scalar(e: &Expr) -> CqlResult<Scalar> {
    let var = |name: &str| -> Option<Scalar> {
        name.strip_prefix("@@")
            .map(|v| Scalar::Variable(v.to_ascii_lowercase()))
    };
    match e {
        Expr::Identifier(i) => var(&i.value),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            // @@session.x, @@global.x, @@local.x
            [scope, name] if scope.value.starts_with("@@") => {
                Some(Scalar::Variable(name.value.to_ascii_lowercase()))
            }
            _ => None,
        },
        Expr::Function(f) => {
            let no_args = match &f.args {
                FunctionArguments::None => true,
                FunctionArguments::List(l) => l.args.is_empty(),
                FunctionArguments::Subquery(_) => false,
            };
            let name = f.name.to_string().to_ascii_lowercase();
            if !no_args {
                None
            } else {
                match name.as_str() {
                    "database" | "schema" => Some(Scalar::Database),
                    "version" => Some(Scalar::Version),
                    "connection_id" => Some(Scalar::ConnectionId),
                    "user" | "current_user" | "session_user" | "system_user" => Some(Scalar::User),
                    "now" | "unix_timestamp" | "current_timestamp" => Some(Scalar::UnixTime),
                    _ => None,
                }
            }
        }
        other => literal(other).ok().map(Scalar::Lit),
    }
    .ok_or_else(|| not_supported(&format!("`SELECT {e}` without FROM")))
}

fn literal(e: &Expr) -> CqlResult<Lit> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Ok(Lit::Num(n.clone())),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(Lit::Str(s.clone())),
            Value::Boolean(b) => Ok(Lit::Bool(*b)),
            Value::Null => Ok(Lit::Null),
            other => Err(not_supported(&format!("the value `{other}`"))),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Lit::Num(n) => Ok(Lit::Num(format!("-{n}"))),
            _ => Err(CqlError::syntax(format!("`{e}` is not a value"))),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => literal(expr),
        Expr::Nested(inner) => literal(inner),
        other => Err(not_supported(&format!(
            "the expression `{other}` as a value"
        ))),
    }
}

/// Flattens `a = 1 AND b IN (2, 3)` into conditions; anything else is an error.
fn conditions(selection: Option<Expr>) -> CqlResult<Vec<Cond>> {
    let mut out: Vec<Cond> = Vec::new();
    if let Some(e) = selection {
        collect(e, &mut out)?;
    }
    let values: usize = out.iter().map(|c| c.values.len()).sum();
    if values > MAX_CONDITION_VALUES {
        return Err(CqlError::new(
            code::TOO_MANY_VALUES,
            format!("Error in expression list, too many values (at most {MAX_CONDITION_VALUES})."),
        ));
    }
    for (i, c) in out.iter().enumerate() {
        if out[..i].iter().any(|d| d.column == c.column) {
            return Err(CqlError::new(
                code::KEY_REQUIRED,
                format!(
                    "Each column in the conditions used only once (`{}`)",
                    c.column
                ),
            ));
        }
    }
    Ok(out)
}

/// Walks the AND tree with a stack of its own, not by recursion: sqlparser builds a chain of
/// ANDs in a loop, so its recursion limit does not bound the tree's depth, and a query of
/// `a = 1 && a = 1 && ...` would otherwise recurse thousands of frames deep. It stops as soon
/// as there are more conditions than allowed.
fn collect(e: Expr, out: &mut Vec<Cond>) -> CqlResult<()> {
    let mut todo = vec![e];
    while let Some(e) = todo.pop() {
        match e {
            Expr::Nested(inner) => todo.push(*inner),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                // The left operand first: conditions keep their written order.
                todo.push(*right);
                todo.push(*left);
            }
            leaf => {
                out.push(condition(leaf)?);
                if out.len() > MAX_CONDITIONS {
                    return Err(too_many_conditions());
                }
            }
        }
    }
    Ok(())
}

fn too_many_conditions() -> CqlError {
    CqlError::new(
        code::TOO_MANY_CONDITIONS,
        format!("Error in expression list, too many conditions (at most {MAX_CONDITIONS})."),
    )
}

/// One condition: `column = value` or `column IN (values)`.
fn condition(e: Expr) -> CqlResult<Cond> {
    match e {
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Or | BinaryOperator::Xor => Err(CqlError::not_implemented(
                "Operator OR is not yet implemented",
            )),
            BinaryOperator::Eq => {
                let (col, val) = match column_name_strict(&left) {
                    Some(c) => (c, right),
                    // `5 = id` is fine too.
                    None => match column_name_strict(&right) {
                        Some(c) => (c, left),
                        None => column_name(&left)
                            .map(|c| (c, right))
                            .ok_or_else(|| CqlError::syntax(format!("`{left}` is not a column")))?,
                    },
                };
                Ok(Cond {
                    column: col,
                    values: vec![literal(&val)?],
                })
            }
            other => Err(CqlError::not_implemented(format!(
                "Operator {other} is not supported in CometQL conditions (use = or IN)"
            ))),
        },
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated: false,
            ..
        } => {
            let col = column_name(&expr)
                .ok_or_else(|| CqlError::syntax(format!("`{expr}` is not a column")))?;
            let values = list.iter().map(literal).collect::<CqlResult<Vec<_>>>()?;
            Ok(Cond {
                column: col,
                values,
            })
        }
        Expr::In { negated: true, .. } => Err(not_supported("NOT IN")),
        Expr::In { .. } => Err(not_supported("IN with a subquery")),
        Expr::Like { .. } | Expr::ILike { .. } => Err(CqlError::not_implemented(
            "Operator LIKE is not supported in CometQL conditions (use = or IN)",
        )),
        other => Err(not_supported(&format!("the condition `{other}`"))),
    }
}

/// A column written as an identifier (not a quoted string): used to tell `'x' = col` apart.
fn column_name_strict(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => column_name(e),
        Expr::Nested(inner) => column_name_strict(inner),
        _ => None,
    }
}

fn insert(i: ast::Insert) -> CqlResult<Stmt> {
    let table = match &i.table {
        TableObject::TableName(n) => object_name(n)?,
        _ => return Err(not_supported("INSERT into a table function")),
    };
    if i.on.is_some() || i.returning.is_some() || i.partitioned.is_some() {
        return Err(not_supported("ON DUPLICATE KEY / RETURNING / PARTITION"));
    }
    // `INSERT INTO t SET a = 1, b = 2` (MySQL) is the same as a column list.
    if !i.assignments.is_empty() {
        let mut columns = Vec::new();
        let mut values = Vec::new();
        for a in &i.assignments {
            match &a.target {
                ast::AssignmentTarget::ColumnName(n) => {
                    columns.push(object_name(n)?.to_ascii_lowercase())
                }
                ast::AssignmentTarget::Tuple(_) => return Err(not_supported("tuple assignment")),
            }
            values.push(literal(&a.value)?);
        }
        return insert_checked(table, Some(columns), values);
    }
    let columns = if i.columns.is_empty() {
        None
    } else {
        Some(
            i.columns
                .iter()
                .map(|c| object_name(c).map(|s| s.to_ascii_lowercase()))
                .collect::<CqlResult<Vec<_>>>()?,
        )
    };
    let source = i
        .source
        .ok_or_else(|| CqlError::syntax("INSERT needs VALUES (...)"))?;
    let rows = match *source.body {
        SetExpr::Values(v) => v.rows,
        _ => return Err(not_supported("INSERT ... SELECT")),
    };
    if rows.len() != 1 {
        return Err(CqlError::not_implemented(
            "one row per INSERT: send one INSERT per row",
        ));
    }
    let values = rows
        .into_iter()
        .next()
        .map(|r| r.content)
        .unwrap_or_default()
        .iter()
        .map(literal)
        .collect::<CqlResult<Vec<_>>>()?;
    insert_checked(table, columns, values)
}

fn insert_checked(
    table: String,
    columns: Option<Vec<String>>,
    values: Vec<Lit>,
) -> CqlResult<Stmt> {
    if let Some(cols) = &columns {
        if cols.len() > MAX_INSERT_NAMES {
            return Err(CqlError::new(
                code::TOO_MANY_NAMES,
                format!("Error in names list, too many names (at most {MAX_INSERT_NAMES})."),
            ));
        }
        for (i, c) in cols.iter().enumerate() {
            if cols[..i].contains(c) {
                return Err(CqlError::new(
                    code::KEY_REQUIRED,
                    format!("Each column in the insert used only once (`{c}`)"),
                ));
            }
        }
    }
    if values.len() > MAX_INSERT_NAMES {
        return Err(CqlError::new(
            code::TOO_MANY_VALUES,
            format!("Error in names list, too many values (at most {MAX_INSERT_NAMES})."),
        ));
    }
    if let Some(cols) = &columns
        && cols.len() != values.len()
    {
        return Err(CqlError::new(
            code::BAD_COLUMNS,
            format!(
                "Error in columns list: {} columns but {} values",
                cols.len(),
                values.len()
            ),
        ));
    }
    Ok(Stmt::Insert {
        table,
        columns,
        values,
    })
}

fn single_table(from: &[ast::TableWithJoins]) -> CqlResult<String> {
    match from {
        [t] if t.joins.is_empty() => match &t.relation {
            TableFactor::Table { name, .. } => object_name(name),
            _ => Err(not_supported("subqueries")),
        },
        _ => Err(not_supported("several tables in one statement")),
    }
}

fn delete(d: ast::Delete) -> CqlResult<Stmt> {
    if !d.order_by.is_empty() {
        return Err(CqlError::not_implemented(
            "Token ORDER BY is not yet implemented",
        ));
    }
    if d.using.is_some() || d.returning.is_some() || !d.tables.is_empty() {
        return Err(not_supported("multi-table DELETE / RETURNING"));
    }
    let from = match &d.from {
        FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
    };
    let table = single_table(from)?;
    // LIMIT on DELETE is accepted and has no effect (every key names at most one row).
    Ok(Stmt::Delete {
        table,
        conds: conditions(d.selection)?,
    })
}

fn update(u: ast::Update) -> CqlResult<Stmt> {
    if !u.order_by.is_empty() || u.from.is_some() || u.returning.is_some() {
        return Err(not_supported("UPDATE with ORDER BY / FROM / RETURNING"));
    }
    let table = single_table(std::slice::from_ref(&u.table))?;
    let mut set = Vec::new();
    for a in &u.assignments {
        let col = match &a.target {
            ast::AssignmentTarget::ColumnName(n) => object_name(n)?.to_ascii_lowercase(),
            ast::AssignmentTarget::Tuple(_) => return Err(not_supported("tuple assignment")),
        };
        if set.iter().any(|(c, _)| *c == col) {
            return Err(CqlError::new(
                code::KEY_REQUIRED,
                format!("Each column in SET used only once (`{col}`)"),
            ));
        }
        set.push((col, literal(&a.value)?));
    }
    Ok(Stmt::Update {
        table,
        set,
        conds: conditions(u.selection)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(c: &str, v: &[Lit]) -> Cond {
        Cond {
            column: c.into(),
            values: v.to_vec(),
        }
    }

    fn s(x: &str) -> Lit {
        Lit::Str(x.into())
    }

    fn n(x: &str) -> Lit {
        Lit::Num(x.into())
    }

    #[test]
    fn select_with_in_and_limit() {
        let st = parse(
            "SELECT id, `hash` FROM users_auth WHERE id IN (1,'2') AND hash = \"x\" LIMIT 2,3",
        )
        .unwrap();
        assert_eq!(
            st,
            Stmt::Select(Select {
                table: "users_auth".into(),
                columns: Some(vec![
                    ("id".into(), "id".into()),
                    ("hash".into(), "hash".into())
                ]),
                conds: vec![cond("id", &[n("1"), s("2")]), cond("hash", &[s("x")])],
                limit: Some((2, 3)),
            })
        );
        let st = parse("select * from conference where name = '101' limit 5").unwrap();
        let Stmt::Select(sel) = st else { panic!() };
        assert_eq!(sel.columns, None);
        assert_eq!(sel.limit, Some((0, 5)));
    }

    #[test]
    fn quoted_names_everywhere() {
        let st = parse("SELECT 'id', \"hash\" FROM 'users_auth' WHERE 'id' = '5'").unwrap();
        let Stmt::Select(sel) = st else { panic!() };
        assert_eq!(sel.table, "users_auth");
        assert_eq!(sel.columns.unwrap()[1].1, "hash");
        assert_eq!(sel.conds, vec![cond("id", &[s("5")])]);
        let st = parse("INSERT INTO `users_auth` ('id', \"hash\") VALUES (1, 'x')").unwrap();
        assert_eq!(
            st,
            Stmt::Insert {
                table: "users_auth".into(),
                columns: Some(vec!["id".into(), "hash".into()]),
                values: vec![n("1"), s("x")]
            }
        );
    }

    #[test]
    fn insert_forms() {
        let st = parse("INSERT INTO conference (name, user_id, caller_id, message, profile) VALUES ('101', 2, -2, '{}', 'video')").unwrap();
        let Stmt::Insert { values, .. } = st else {
            panic!()
        };
        assert_eq!(values[2], n("-2"));
        let st = parse("INSERT INTO users_auth VALUES (1, 'x')").unwrap();
        assert!(matches!(st, Stmt::Insert { columns: None, .. }));
        let st = parse("INSERT INTO users_auth SET id = 1, hash = 'x'").unwrap();
        assert!(matches!(st, Stmt::Insert { columns: Some(c), .. } if c == ["id", "hash"]));
        assert_eq!(
            parse("INSERT INTO t (a, b) VALUES (1)").unwrap_err().code,
            14
        );
        assert_eq!(
            parse("INSERT INTO t (a, a) VALUES (1, 2)")
                .unwrap_err()
                .code,
            13
        );
        assert_eq!(parse("INSERT INTO t VALUES (1), (2)").unwrap_err().code, 2);
    }

    #[test]
    fn strings_are_unescaped_like_mysql() {
        let st = parse(
            r#"INSERT INTO users_messages (id, event, message) VALUES (1, 'e', '{\"a\":\'b\'}')"#,
        )
        .unwrap();
        let Stmt::Insert { values, .. } = st else {
            panic!()
        };
        assert_eq!(values[2], s(r#"{"a":'b'}"#));
    }

    #[test]
    fn meta_statements() {
        assert_eq!(parse("SET NAMES utf8").unwrap(), Stmt::Set);
        assert_eq!(parse("SET autocommit=1").unwrap(), Stmt::Set);
        assert_eq!(parse("SHOW TABLES").unwrap(), Stmt::ShowTables);
        assert_eq!(parse("show databases").unwrap(), Stmt::ShowDatabases);
        assert_eq!(
            parse("DESCRIBE users_auth").unwrap(),
            Stmt::ShowColumns("users_auth".into())
        );
        assert_eq!(
            parse("SHOW COLUMNS FROM conference").unwrap(),
            Stmt::ShowColumns("conference".into())
        );
        assert_eq!(
            parse("SHOW VARIABLES LIKE 'lower%'").unwrap(),
            Stmt::ShowVariables(Some("lower%".into()))
        );
        assert_eq!(parse("USE db_5").unwrap(), Stmt::Use("db_5".into()));
        assert_eq!(parse(";;;;").unwrap(), Stmt::Empty);
        assert_eq!(parse("").unwrap_err().code, 17);
        assert_eq!(
            parse("SELECT @@version_comment LIMIT 1").unwrap(),
            Stmt::Scalars(vec![(
                "@@version_comment".into(),
                Scalar::Variable("version_comment".into())
            )])
        );
        assert_eq!(
            parse("SELECT @@session.auto_increment_increment AS a, DATABASE(), 1").unwrap(),
            Stmt::Scalars(vec![
                (
                    "a".into(),
                    Scalar::Variable("auto_increment_increment".into())
                ),
                ("DATABASE()".into(), Scalar::Database),
                ("1".into(), Scalar::Lit(n("1"))),
            ])
        );
    }

    /// A long AND chain (sqlparser builds it in a loop, so its recursion limit does not bound
    /// the tree's depth) is refused by the condition count without recursing over it, on a
    /// stack the size of a tokio worker's, in debug builds too.
    #[test]
    fn long_and_chain_is_an_error_not_a_stack_overflow() {
        for op in ["&&", " AND "] {
            let chain = vec!["a = 1"; 9000 / (op.len() + 5)].join(op);
            let sql = format!("SELECT * FROM users_time WHERE {chain}");
            let sql = sql[..sql.len().min(MAX_QUERY_LEN - 1)].to_string();
            let sql = sql[..sql.rfind("a = 1").unwrap() + 5].to_string();
            let code = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || parse(&sql).map(|_| ()).unwrap_err().code)
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(code, 18, "{op}");
        }
    }

    #[test]
    fn error_codes() {
        assert_eq!(parse("SEL").unwrap_err().code, 17);
        assert_eq!(
            parse(&format!("SELECT * FROM t WHERE a = '{}'", "x".repeat(9000)))
                .unwrap_err()
                .code,
            11
        );
        assert_eq!(parse("SELECT * FORM users_auth").unwrap_err().code, 3);
        assert_eq!(
            parse("SELECT * FROM t WHERE a = 1 OR b = 2")
                .unwrap_err()
                .code,
            2
        );
        assert_eq!(
            parse("SELECT * FROM t WHERE a = 1 ORDER BY a")
                .unwrap_err()
                .code,
            2
        );
        assert_eq!(parse("SELECT * FROM t WHERE a > 1").unwrap_err().code, 2);
        assert_eq!(
            parse("SELECT * FROM t WHERE a LIKE 'x'").unwrap_err().code,
            2
        );
        assert_eq!(
            parse("SELECT * FROM t WHERE a = 1 AND a = 2")
                .unwrap_err()
                .code,
            13
        );
        let many: Vec<String> = (0..11).map(|i| format!("c{i} = 1")).collect();
        assert_eq!(
            parse(&format!("SELECT * FROM t WHERE {}", many.join(" AND ")))
                .unwrap_err()
                .code,
            18
        );
        // 4001 one-digit values fit under the 9000-byte limit.
        let ones = vec!["1"; 4001];
        assert_eq!(
            parse(&format!("SELECT * FROM t WHERE id IN ({})", ones.join(",")))
                .unwrap_err()
                .code,
            19
        );
        let vals: Vec<String> = (0..21).map(|i| i.to_string()).collect();
        let cols: Vec<String> = (0..21).map(|i| format!("c{i}")).collect();
        assert_eq!(
            parse(&format!("SELECT {} FROM t", cols.join(",")))
                .unwrap_err()
                .code,
            20
        );
        assert_eq!(
            parse(&format!(
                "INSERT INTO t ({}) VALUES ({})",
                cols.join(","),
                vals[..21].join(",")
            ))
            .unwrap_err()
            .code,
            21
        );
        assert_eq!(
            parse(&format!("INSERT INTO t VALUES ({})", vals[..21].join(",")))
                .unwrap_err()
                .code,
            19
        );
        assert_eq!(parse("SELECT a, a FROM t").unwrap_err().code, 13);
        assert_eq!(parse("SELECT 1; SELECT 2").unwrap_err().code, 2);
        assert_eq!(parse("CREATE TABLE x (a int)").unwrap_err().code, 2);
    }

    #[test]
    fn update_and_delete() {
        assert_eq!(
            parse("DELETE FROM conference WHERE name='101' AND user_id=2").unwrap(),
            Stmt::Delete {
                table: "conference".into(),
                conds: vec![cond("name", &[s("101")]), cond("user_id", &[n("2")])]
            }
        );
        assert_eq!(
            parse("UPDATE conference_members SET audio = 0 WHERE name = '101' AND user_id = 7")
                .unwrap(),
            Stmt::Update {
                table: "conference_members".into(),
                set: vec![("audio".into(), n("0"))],
                conds: vec![cond("name", &[s("101")]), cond("user_id", &[n("7")])]
            }
        );
    }

    proptest::proptest! {
        /// Any text gets a statement or a CometQL error, never a panic.
        #[test]
        fn arbitrary_text_never_panics(sql in "\\PC{0,300}") {
            let _ = parse(&sql);
        }

        /// Mutations of valid statements too.
        #[test]
        fn mutated_statements_never_panic(
            base in proptest::sample::select(vec![
                "SELECT * FROM users_auth WHERE id IN (1, 2) AND hash = 'x' LIMIT 1, 2",
                "INSERT INTO conference (name, user_id, message) VALUES ('101', 2, '{}')",
                "DELETE FROM conference WHERE name = '101' AND user_id = 2",
                "UPDATE conference_members SET audio = 0 WHERE name = '1' AND user_id = 7",
                "SELECT @@version_comment, DATABASE() LIMIT 1",
            ]),
            cut in 0usize..120,
            junk in "\\PC{0,8}",
        ) {
            let mut s = base.to_string();
            let at = (cut.min(s.len()) ..= s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
            s.insert_str(at, &junk);
            let _ = parse(&s);
            let _ = parse(&s[..at]);
        }
    }
}
