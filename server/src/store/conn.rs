//! The connection the use cases speak SQL through, whichever backend holds the data: statements,
//! parameters, rows and transactions in one shape, so that each use case is written once.
//!
//! The shape is rusqlite's (`prepare_cached`, `query_row`, `query_map`, `optional`), the values
//! SQLite's five (null, integer, real, text, blob). Statements are written in the SQL both
//! backends read; where they differ, a use case asks [`Conn::dialect`].

use std::fmt;
use std::fmt::Write as _;

use crate::store::pg::{Any, Session};

/// What a statement failed with.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// A statement that must answer one row answered none.
    #[error("query returned no rows")]
    NoRows,
    /// A column held a value of another type than the one asked for.
    #[error("column {column}: {message}")]
    Type {
        /// Column index.
        column: usize,
        /// What was found.
        message: String,
    },
    /// The backend failed.
    #[error("{0}")]
    Backend(String),
    /// A value the database cannot store (PostgreSQL's text holds no NUL).
    #[error("{0}")]
    Unstorable(String),
    /// The writer lock was not free in time.
    #[error("{0}")]
    Busy(String),
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> SqlError {
        match e {
            rusqlite::Error::QueryReturnedNoRows => SqlError::NoRows,
            rusqlite::Error::ToSqlConversionFailure(inner) => match inner.downcast::<SqlError>() {
                Ok(e) => *e,
                Err(other) => SqlError::Backend(format!("sqlite: {other}")),
            },
            e => SqlError::Backend(format!("sqlite: {e}")),
        }
    }
}

/// A statement's answer of one row, or none ([`SqlError::NoRows`] made `None`).
pub trait Optional<T> {
    /// `Ok(None)` where the statement answered no row.
    fn optional(self) -> Result<Option<T>, SqlError>;
}

impl<T> Optional<T> for Result<T, SqlError> {
    fn optional(self) -> Result<Option<T>, SqlError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(SqlError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The SQL a backend reads, where the two differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A value bound to a parameter or read from a column, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    /// SQL null.
    Null,
    /// A 64-bit integer (booleans are 0 and 1).
    Integer(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// A value owned, for parameter lists built at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL null.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Integer(i)
    }
}

impl From<String> for Value {
    fn from(t: String) -> Value {
        Value::Text(t)
    }
}

impl From<&str> for Value {
    fn from(t: &str) -> Value {
        Value::Text(t.to_owned())
    }
}

/// A Rust value a parameter takes.
pub trait ToValue {
    /// The value bound.
    fn to_value(&self) -> ValueRef<'_>;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> ValueRef<'_> {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Null, ToValue::to_value)
    }
}

impl ToValue for Value {
    fn to_value(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

macro_rules! integer_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> ValueRef<'_> {
                ValueRef::Integer(i64::from(*self))
            }
        }
    )*};
}
integer_values!(i64, i32, u32, u16, u8, bool);

impl ToValue for f64 {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToValue for String {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

/// A statement's parameters, in order.
pub trait Params {
    /// The values bound, first parameter first.
    fn values(&self) -> Vec<ValueRef<'_>>;
}

impl Params for () {
    fn values(&self) -> Vec<ValueRef<'_>> {
        Vec::new()
    }
}

impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl<T: ToValue> Params for &[T] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl<T: ToValue> Params for Vec<T> {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}

/// Parameters of several types: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    () => { () };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::conn::ToValue),+] as &[&dyn $crate::store::conn::ToValue]
    };
}
pub use crate::params;

/// A Rust value a column is read as.
pub trait FromValue: Sized {
    /// The value, or what was wrong with the column's.
    fn from_value(v: ValueRef<'_>) -> Result<Self, String>;
}

fn wrong(want: &str, v: ValueRef<'_>) -> String {
    let found = match v {
        ValueRef::Null => "null",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    };
    format!("{want} expected, {found} found")
}

impl FromValue for i64 {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Integer(i) => Ok(i),
            v => Err(wrong("an integer", v)),
        }
    }
}

macro_rules! narrow_integers {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
                let i = i64::from_value(v)?;
                <$t>::try_from(i).map_err(|_| format!("{i} out of range"))
            }
        }
    )*};
}
narrow_integers!(i32, u32, u64, usize, u16, u8);

impl FromValue for bool {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        Ok(i64::from_value(v)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Real(r) => Ok(r),
            ValueRef::Integer(i) => Ok(i as f64),
            v => Err(wrong("a real", v)),
        }
    }
}

impl FromValue for String {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Text(t) => Ok(t.to_owned()),
            v => Err(wrong("text", v)),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            ValueRef::Text(t) => Ok(t.as_bytes().to_vec()),
            v => Err(wrong("a blob", v)),
        }
    }
}

impl FromValue for Value {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        Ok(match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(t.to_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// The most rows [`Conn::execute_rows`] sends in one statement.
pub const ROWS_AT_ONCE: usize = 64;

/// A connection to the store's database, on either backend.
#[derive(Clone, Copy)]
pub enum Conn<'a> {
    /// A SQLite connection.
    Sqlite(&'a rusqlite::Connection),
    /// A PostgreSQL session.
    Pg(&'a Session<'a>),
}

impl fmt::Debug for Conn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Sqlite(_) => "Conn::Sqlite",
            Conn::Pg(_) => "Conn::Pg",
        })
    }
}

impl<'a> From<&'a rusqlite::Connection> for Conn<'a> {
    fn from(c: &'a rusqlite::Connection) -> Conn<'a> {
        Conn::Sqlite(c)
    }
}

impl<'a> Conn<'a> {
    /// The SQL this backend reads.
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Pg(_) => Dialect::Postgres,
        }
    }

    /// The statement of this backend's dialect, where the two differ.
    pub fn pick<'s>(&self, sqlite: &'s str, postgres: &'s str) -> &'s str {
        match self.dialect() {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, checkpoints, backups).
    pub fn sqlite(&self) -> Option<&'a rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            Conn::Pg(_) => None,
        }
    }

    /// A statement kept prepared for the next call with the same text.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'a>, SqlError> {
        match self {
            Conn::Sqlite(c) => Ok(Stmt::SqliteCached(c.prepare_cached(sql)?)),
            Conn::Pg(p) => Ok(Stmt::Pg(p, p.prepare(sql)?)),
        }
    }

    /// A statement prepared for this use only (text built at run time).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'a>, SqlError> {
        match self {
            Conn::Sqlite(c) => Ok(Stmt::Sqlite(c.prepare(sql)?)),
            Conn::Pg(p) => Ok(Stmt::Pg(p, p.prepare(sql)?)),
        }
    }

    /// Runs a statement; answers the rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize, SqlError> {
        self.prepare(sql)?.execute(params)
    }

    /// The first row of a statement's answer, read by `f`; [`SqlError::NoRows`] without one.
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> Result<T, SqlError>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T, SqlError>,
    {
        self.prepare(sql)?.query_row(params, f)
    }

    /// Runs `{head} VALUES (…), (…) {tail}` for every row of `values` (`width` values a row,
    /// flattened): one statement per [`ROWS_AT_ONCE`] rows, not one a row, since on PostgreSQL
    /// each statement is a round trip. Answers the rows changed.
    pub fn execute_rows(
        &self,
        head: &str,
        tail: &str,
        width: usize,
        values: &[Value],
    ) -> Result<usize, SqlError> {
        if width == 0 || !values.len().is_multiple_of(width) {
            return Err(SqlError::Backend(format!(
                "{} values do not make rows of {width}",
                values.len()
            )));
        }
        let mut changed = 0;
        let mut rest = values;
        while !rest.is_empty() {
            // Chunks of a power of two rows: each text is prepared once and kept.
            let rows = rest.len() / width;
            let take = ROWS_AT_ONCE.min(1 << rows.ilog2());
            let (chunk, after) = rest.split_at(take * width);
            let mut sql = String::with_capacity(head.len() + tail.len() + take * width * 5);
            sql.push_str(head);
            sql.push_str(" VALUES ");
            for row in 0..take {
                sql.push_str(if row == 0 { "(" } else { ", (" });
                for column in 0..width {
                    if column > 0 {
                        sql.push_str(", ");
                    }
                    let _ = write!(sql, "?{}", row * width + column + 1);
                }
                sql.push(')');
            }
            sql.push(' ');
            sql.push_str(tail);
            changed += self.prepare_cached(&sql)?.execute(chunk)?;
            rest = after;
        }
        Ok(changed)
    }

    /// Runs statements with no parameters, one after another.
    pub fn execute_batch(&self, sql: &str) -> Result<(), SqlError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(p) => p.batch(sql),
        }
    }

    /// Begins a transaction, which holds the write lock from its start: it commits with
    /// [`Tx::commit`], and rolls back when dropped otherwise.
    pub fn transaction(&self) -> Result<Tx<'a>, SqlError> {
        match self {
            Conn::Sqlite(c) => c.execute_batch("BEGIN IMMEDIATE")?,
            // Every node's transactions take turns (`store::pg`).
            Conn::Pg(p) => p.begin_writing()?,
        }
        Ok(Tx {
            conn: *self,
            open: true,
        })
    }
}

/// A transaction: reads and writes through it as through its connection.
pub struct Tx<'a> {
    conn: Conn<'a>,
    open: bool,
}

impl<'a> Tx<'a> {
    /// Commits it. When the commit fails the transaction is rolled back (SQLite may leave it
    /// open after a failed `COMMIT`, and the connection's next `BEGIN` would fail).
    pub fn commit(mut self) -> Result<(), SqlError> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = Conn<'a>;

    fn deref(&self) -> &Conn<'a> {
        &self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed rollback leaves nothing to do here: the connection's next BEGIN fails.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A prepared statement.
pub enum Stmt<'a> {
    /// SQLite, kept in the connection's cache.
    SqliteCached(rusqlite::CachedStatement<'a>),
    /// SQLite, for this use only.
    Sqlite(rusqlite::Statement<'a>),
    /// PostgreSQL, prepared once per connection.
    Pg(&'a Session<'a>, tokio_postgres::Statement),
}

/// A SQLite parameter's value.
struct Bind<'a>(ValueRef<'a>);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef as V;
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self.0 {
            ValueRef::Null => V::Null,
            ValueRef::Integer(i) => V::Integer(i),
            ValueRef::Real(r) => V::Real(r),
            ValueRef::Text(t) => V::Text(t.as_bytes()),
            ValueRef::Blob(b) => V::Blob(b),
        }))
    }
}

fn binds<P: Params>(params: &P) -> Vec<Bind<'_>> {
    params.values().into_iter().map(Bind).collect()
}

/// Our error carried through a rusqlite callback.
fn carried(e: SqlError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

// Parameters are taken by value, as rusqlite takes them: call sites pass arrays and `params![]`.
#[allow(clippy::needless_pass_by_value)]
impl<'a> Stmt<'a> {
    /// The SQLite statement, or the PostgreSQL session and statement.
    fn parts(
        &mut self,
    ) -> Result<&mut rusqlite::Statement<'a>, (&'a Session<'a>, &tokio_postgres::Statement)> {
        match self {
            Stmt::SqliteCached(s) => Ok(s),
            Stmt::Sqlite(s) => Ok(s),
            Stmt::Pg(p, s) => Err((*p, s)),
        }
    }

    /// Runs it; answers the rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize, SqlError> {
        match self.parts() {
            Ok(s) => Ok(s.execute(rusqlite::params_from_iter(binds(&params)))?),
            Err((p, s)) => p.execute(s, &params.values()),
        }
    }

    /// Whether it answers any row.
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool, SqlError> {
        match self.parts() {
            Ok(s) => Ok(s.exists(rusqlite::params_from_iter(binds(&params)))?),
            Err((p, s)) => Ok(!p.query(s, &params.values())?.is_empty()),
        }
    }

    /// Its first row, read by `f`; [`SqlError::NoRows`] without one.
    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> Result<T, SqlError>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T, SqlError>,
    {
        match self.parts() {
            Ok(s) => {
                let mut rows = s.query(rusqlite::params_from_iter(binds(&params)))?;
                match rows.next()? {
                    Some(row) => f(&Row::Sqlite(row)),
                    None => Err(SqlError::NoRows),
                }
            }
            Err((p, s)) => match p.query(s, &params.values())?.first() {
                Some(row) => f(&Row::Pg(row)),
                None => Err(SqlError::NoRows),
            },
        }
    }

    /// Every row, each read by `f`, in order.
    pub fn query_map<'s, T: 's, P, F>(
        &'s mut self,
        params: P,
        mut f: F,
    ) -> Result<Mapped<'s, T>, SqlError>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> Result<T, SqlError> + 's,
    {
        match self.parts() {
            Ok(s) => {
                let rows = s.query_map(rusqlite::params_from_iter(binds(&params)), move |r| {
                    f(&Row::Sqlite(r)).map_err(carried)
                })?;
                Ok(Box::new(rows.map(|r| r.map_err(SqlError::from))))
            }
            Err((p, s)) => {
                let rows = p.query(s, &params.values())?;
                let read: Vec<Result<T, SqlError>> = rows.iter().map(|r| f(&Row::Pg(r))).collect();
                Ok(Box::new(read.into_iter()))
            }
        }
    }

    /// Its rows, to step through with [`Rows::next`].
    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows<'_>, SqlError> {
        match self.parts() {
            Ok(s) => Ok(Rows::Sqlite(
                s.query(rusqlite::params_from_iter(binds(&params)))?,
            )),
            Err((p, s)) => Ok(Rows::Pg(p.query(s, &params.values())?, 0)),
        }
    }
}

/// A statement's rows, each read by the caller's function.
pub type Mapped<'s, T> = Box<dyn Iterator<Item = Result<T, SqlError>> + 's>;

/// A statement's rows, read one at a time.
pub enum Rows<'s> {
    /// SQLite's.
    Sqlite(rusqlite::Rows<'s>),
    /// PostgreSQL's, all read, and the next one's index.
    Pg(Vec<tokio_postgres::Row>, usize),
}

impl Rows<'_> {
    /// The next row, or `None` after the last (each borrows the rows: not an `Iterator`).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>, SqlError> {
        match self {
            Rows::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            Rows::Pg(rows, at) => {
                *at += 1;
                Ok(rows.get(*at - 1).map(Row::Pg))
            }
        }
    }
}

/// A column's place in a row (by number only: statements name their columns in order).
pub trait ColumnIndex {
    /// The column's index, from 0.
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of an answer.
pub enum Row<'r> {
    /// SQLite's.
    Sqlite(&'r rusqlite::Row<'r>),
    /// PostgreSQL's.
    Pg(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `idx` as a `T`.
    pub fn get<I: ColumnIndex, T: FromValue>(&self, idx: I) -> Result<T, SqlError> {
        let column = idx.index();
        let value = match self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef as V;
                match r.get_ref(column)? {
                    V::Null => ValueRef::Null,
                    V::Integer(i) => ValueRef::Integer(i),
                    V::Real(x) => ValueRef::Real(x),
                    V::Text(t) => {
                        ValueRef::Text(std::str::from_utf8(t).map_err(|e| SqlError::Type {
                            column,
                            message: e.to_string(),
                        })?)
                    }
                    V::Blob(b) => ValueRef::Blob(b),
                }
            }
            Row::Pg(r) => {
                r.try_get::<_, Any<'_>>(column)
                    .map_err(|e| SqlError::Type {
                        column,
                        message: e.to_string(),
                    })?
                    .0
            }
        };
        T::from_value(value).map_err(|message| SqlError::Type { column, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_in_chunks_every_row_once_and_a_ragged_list_is_refused() {
        let raw = rusqlite::Connection::open_in_memory().unwrap();
        let conn = Conn::Sqlite(&raw);
        conn.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
            .unwrap();
        // 100 rows: chunks of 64, 32 and 4.
        let values: Vec<Value> = (0..100)
            .flat_map(|i| [Value::Integer(i), Value::Text(format!("r{i}"))])
            .collect();
        let changed = conn
            .execute_rows("INSERT INTO t (a, b)", "", 2, &values)
            .unwrap();
        assert_eq!(changed, 100);
        let (count, sum, last): (i64, i64, String) = conn
            .query_row(
                "SELECT COUNT(*), SUM(a), (SELECT b FROM t WHERE a = 99) FROM t",
                (),
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((count, sum, last.as_str()), (100, 4950, "r99"));
        // The tail applies to every chunk.
        let again = conn
            .execute_rows(
                "INSERT INTO t (a, b)",
                "ON CONFLICT (a) DO NOTHING",
                2,
                &values,
            )
            .unwrap();
        assert_eq!(again, 0);
        assert!(
            conn.execute_rows("INSERT INTO t (a, b)", "", 2, &values[..3])
                .is_err()
        );
        assert_eq!(
            conn.execute_rows("INSERT INTO t (a, b)", "", 2, &[])
                .unwrap(),
            0
        );
    }
}
