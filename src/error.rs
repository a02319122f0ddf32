//! The one error type of the service, and its mapping to `tonic::Status`.
//!
//! Every failure a handler can meet is a variant here; `From<Error> for Status` is the only
//! place that decides codes and client-facing messages. Internal details (SQL errors, I/O
//! errors) are logged in full and never sent to the client.

use tonic::{Code, Status};

/// What went wrong, in the caller's terms.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A unique key is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The operation is disabled on this server.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// No database connection could be had in time, or the database went away.
    /// The string is logged, the client gets a generic retryable message.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The server is shedding load (hashing queue full); retryable.
    #[error("{0}")]
    Overloaded(&'static str),
    /// A database error that is not the caller's fault nor a lost connection.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Anything else unexpected.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server cannot start: bad configuration, a port in use. Said in one line.
    #[error("{0}")]
    Startup(String),
}

impl Error {
    /// Classifies a sqlx error: lost connections and timeouts are retryable UNAVAILABLE,
    /// the rest is INTERNAL.
    pub fn from_sqlx(err: sqlx::Error) -> Self {
        if is_connection_error(&err) {
            Error::Unavailable(err.to_string())
        } else {
            Error::Database(err)
        }
    }

    /// The gRPC code this error becomes.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unavailable(_) | Error::Overloaded(_) => Code::Unavailable,
            Error::Database(_) | Error::Internal(_) | Error::Startup(_) => Code::Internal,
        }
    }
}

/// Whether a sqlx error means the connection (or the database) is gone, so that the
/// connection must be discarded and the caller may retry.
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // SQLSTATE class 08 (connection exception), 57P01-03 (server shutting down or
            // starting), 53300 (too many connections); SQLite's BUSY/LOCKED (5, 6) are
            // retryable contention, not bugs.
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            code.starts_with("08")
                || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "5" | "6")
        }
        _ => false,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        match err {
            Error::Unavailable(detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                Status::new(code, "database unavailable, retry later")
            }
            Error::Database(source) => {
                tracing::error!(error = %source, "database error");
                Status::new(code, "internal error")
            }
            Error::Internal(detail) | Error::Startup(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::new(code, "internal error")
            }
            other => Status::new(code, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_unavailable_and_hide_the_detail() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "secret 10.0.0.7:5432");
        let status = Status::from(Error::from_sqlx(sqlx::Error::Io(io)));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            !status.message().contains("10.0.0.7"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        let status = Status::from(Error::from_sqlx(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);
    }

    #[test]
    fn unexpected_database_errors_are_internal_without_sql() {
        let err = sqlx::Error::ColumnNotFound("senha_hash".into());
        let status = Status::from(Error::from_sqlx(err));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn caller_errors_keep_their_message() {
        let status = Status::from(Error::InvalidArgument("usuario: must not be empty".into()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "usuario: must not be empty");
        assert_eq!(
            Status::from(Error::NotFound("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(Error::AlreadyExists("x".into())).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            Status::from(Error::Unauthenticated("x")).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            Status::from(Error::PermissionDenied("x")).code(),
            Code::PermissionDenied
        );
    }
}
