//! The one error type of the service, and its mapping to `tonic::Status`.
//!
//! Every failure a handler (or the RPC middleware) can meet is a variant here; `From<Error>
//! for Status` is the only place that decides codes, client-facing messages and the error
//! details of gRPC's richer error model (`google.rpc.ErrorInfo`, `BadRequest`, `RetryInfo`).
//! Internal details (SQL errors, I/O errors) are logged in full and never sent to the client.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `domain` of every `ErrorInfo` produto sends.
pub const ERROR_DOMAIN: &str = "produto";

/// The `RetryInfo` delay while the background probe says the database is down: a restart
/// or failover takes seconds, and callers hammering it only slow the recovery.
pub const RETRY_DELAY_DATABASE_DOWN: Duration = Duration::from_secs(5);
/// The `RetryInfo` delay when the database is up but the server is busy (no pool connection
/// in time, hashing queue full, too many calls in progress): the queue drains in moments.
pub const RETRY_DELAY_BUSY: Duration = Duration::from_millis(500);

/// The stable, machine-readable `ErrorInfo.reason` of each error (README, "Error details").
/// Callers branch on these, never on messages; a reason is never renamed once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// NOT_FOUND: no user by that usuario.
    UserNotFound,
    /// ALREADY_EXISTS: the usuario is taken.
    UserExists,
    /// INVALID_ARGUMENT: a new user's senha is too short or too common.
    WeakPassword,
    /// INVALID_ARGUMENT: any other field breaks its rule (the `BadRequest` says which).
    InvalidField,
    /// UNAUTHENTICATED: AlterarSenha with a wrong senha_atual, for an unknown user, or
    /// refused by throttling: one reason for the three, so that they cannot be told apart.
    InvalidCredentials,
    /// UNAUTHENTICATED: an admin operation without `authorization: Bearer <token>`.
    AdminTokenMissing,
    /// UNAUTHENTICATED: the admin token is wrong.
    AdminTokenInvalid,
    /// PERMISSION_DENIED: the server has no admin token, so the admin operations are off.
    AdminDisabled,
    /// UNAUTHENTICATED: caller authentication is on and the call named no caller.
    CallerMissing,
    /// UNAUTHENTICATED: the caller token matches no caller.
    CallerTokenInvalid,
    /// UNAUTHENTICATED: the call named no session (no `produto-session`, and no session
    /// for its end user).
    SessionMissing,
    /// UNAUTHENTICATED: the session named is unknown, ended, expired or idle too long.
    SessionExpired,
    /// PERMISSION_DENIED: the session's user is below the admin level now (its
    /// `ErrorInfo.metadata` holds `admin_nivel`).
    NotAdmin,
    /// UNAVAILABLE: no database connection in time, or the database went away.
    DatabaseUnavailable,
    /// UNAVAILABLE: the password-hashing queue is full.
    Overloaded,
    /// RESOURCE_EXHAUSTED: too many calls in progress on this server.
    ServerBusy,
    /// RESOURCE_EXHAUSTED: the request is larger than the server accepts.
    RequestTooLarge,
    /// RESOURCE_EXHAUSTED: a login refused by brute-force throttling, told to an
    /// authenticated caller only (anyone else gets `valido: false`).
    LoginThrottled,
    /// INVALID_ARGUMENT: the request does not decode as the RPC's message.
    MalformedRequest,
    /// DEADLINE_EXCEEDED: the caller's deadline passed before the call finished.
    DeadlineExceeded,
    /// INTERNAL: a bug or an unexpected database error (logged on the server).
    Internal,
}

impl Reason {
    /// The reason as sent: SCREAMING_SNAKE_CASE.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::UserNotFound => "USER_NOT_FOUND",
            Reason::UserExists => "USER_EXISTS",
            Reason::WeakPassword => "WEAK_PASSWORD",
            Reason::InvalidField => "INVALID_FIELD",
            Reason::InvalidCredentials => "INVALID_CREDENTIALS",
            Reason::AdminTokenMissing => "ADMIN_TOKEN_MISSING",
            Reason::AdminTokenInvalid => "ADMIN_TOKEN_INVALID",
            Reason::AdminDisabled => "ADMIN_DISABLED",
            Reason::CallerMissing => "CALLER_MISSING",
            Reason::CallerTokenInvalid => "CALLER_TOKEN_INVALID",
            Reason::SessionMissing => "SESSION_MISSING",
            Reason::SessionExpired => "SESSION_EXPIRED",
            Reason::NotAdmin => "NOT_ADMIN",
            Reason::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Reason::Overloaded => "OVERLOADED",
            Reason::ServerBusy => "SERVER_BUSY",
            Reason::RequestTooLarge => "REQUEST_TOO_LARGE",
            Reason::LoginThrottled => "LOGIN_THROTTLED",
            Reason::MalformedRequest => "MALFORMED_REQUEST",
            Reason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Reason::Internal => "INTERNAL",
        }
    }
}

/// The rule a request field broke: the `reason` of its `BadRequest.FieldViolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Empty,
    TooLong,
    ControlCharacters,
    SurroundingWhitespace,
    TooShort,
    TooCommon,
    /// A new password zxcvbn scores below the minimum.
    TooWeak,
    /// A new password equal to its username.
    SameAsUsername,
    Negative,
    /// A page token this server did not hand out, or handed out for another query.
    InvalidToken,
}

impl Rule {
    /// The rule as sent: SCREAMING_SNAKE_CASE.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::Empty => "EMPTY",
            Rule::TooLong => "TOO_LONG",
            Rule::ControlCharacters => "CONTROL_CHARACTERS",
            Rule::SurroundingWhitespace => "SURROUNDING_WHITESPACE",
            Rule::TooShort => "TOO_SHORT",
            Rule::TooCommon => "TOO_COMMON",
            Rule::TooWeak => "TOO_WEAK",
            Rule::SameAsUsername => "SAME_AS_USERNAME",
            Rule::Negative => "NEGATIVE",
            Rule::InvalidToken => "INVALID_TOKEN",
        }
    }
}

/// What went wrong, in the caller's terms.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field breaks a rule. `field` is the field's name in the proto; `message`
    /// (what the caller reads) names it too, e.g. "usuario: must not be empty".
    #[error("{message}")]
    InvalidArgument {
        field: &'static str,
        rule: Rule,
        message: String,
    },
    /// The named user does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A unique key is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// Missing or wrong credentials; the reason says which.
    #[error("{1}")]
    Unauthenticated(Reason, &'static str),
    /// The operation is disabled on this server; the reason says which.
    #[error("{1}")]
    PermissionDenied(Reason, &'static str),
    /// An admin operation asked by a session whose user is below the admin level now.
    #[error("admins only: the session's user is below level {admin_nivel}")]
    NotAdmin { admin_nivel: i32 },
    /// No database connection could be had in time, or the database went away.
    /// The string is logged, the client gets a generic retryable message.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// As `Unavailable`, while the background probe says the database is down: the same
    /// answer, with a longer retry delay.
    #[error("database down: {0}")]
    DatabaseDown(String),
    /// Too many failed logins of this username (`limit`: "caller" or "username") in the
    /// window, which frees in `retry_after`. Only authenticated callers are told so.
    #[error("too many login attempts; retry in {} s", retry_after.as_secs().max(1))]
    LoginThrottled {
        limit: &'static str,
        retry_after: Duration,
    },
    /// The server is shedding load (hashing queue full, too many logins of one user in
    /// progress); retryable.
    #[error("{0}")]
    Overloaded(&'static str),
    /// Too many calls in progress across all connections (the middleware's limit).
    #[error("server busy: {max_in_flight} calls already in progress; retry with backoff")]
    ServerBusy { max_in_flight: usize },
    /// A request over the size limit (recoded by the middleware from tonic's answer).
    #[error("request too large (the limit is {limit_bytes} bytes)")]
    RequestTooLarge { limit_bytes: usize },
    /// A request that does not decode (recoded by the middleware); the string is tonic's.
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    /// The caller's deadline passed before the work finished.
    #[error("deadline exceeded before the call finished")]
    DeadlineExceeded,
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

    /// An `Unavailable` met while the background probe says the database is down becomes
    /// `DatabaseDown`, so that callers are told to wait longer.
    pub fn while_database_down(self, down: bool) -> Self {
        match self {
            Error::Unavailable(detail) if down => Error::DatabaseDown(detail),
            other => other,
        }
    }

    /// The gRPC code this error becomes.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } | Error::MalformedRequest(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Unauthenticated(..) => Code::Unauthenticated,
            Error::PermissionDenied(..) | Error::NotAdmin { .. } => Code::PermissionDenied,
            Error::Unavailable(_) | Error::DatabaseDown(_) | Error::Overloaded(_) => {
                Code::Unavailable
            }
            Error::ServerBusy { .. }
            | Error::RequestTooLarge { .. }
            | Error::LoginThrottled { .. } => Code::ResourceExhausted,
            Error::DeadlineExceeded => Code::DeadlineExceeded,
            Error::Database(_) | Error::Internal(_) | Error::Startup(_) => Code::Internal,
        }
    }

    /// The `ErrorInfo.reason` this error carries.
    pub fn reason(&self) -> Reason {
        match self {
            Error::InvalidArgument {
                field: "senha" | "senha_nova",
                rule: Rule::TooShort | Rule::TooCommon | Rule::TooWeak | Rule::SameAsUsername,
                ..
            } => Reason::WeakPassword,
            Error::InvalidArgument { .. } => Reason::InvalidField,
            Error::MalformedRequest(_) => Reason::MalformedRequest,
            Error::NotFound(_) => Reason::UserNotFound,
            Error::NotAdmin { .. } => Reason::NotAdmin,
            Error::AlreadyExists(_) => Reason::UserExists,
            Error::Unauthenticated(reason, _) | Error::PermissionDenied(reason, _) => *reason,
            Error::Unavailable(_) | Error::DatabaseDown(_) => Reason::DatabaseUnavailable,
            Error::Overloaded(_) => Reason::Overloaded,
            Error::ServerBusy { .. } => Reason::ServerBusy,
            Error::RequestTooLarge { .. } => Reason::RequestTooLarge,
            Error::LoginThrottled { .. } => Reason::LoginThrottled,
            Error::DeadlineExceeded => Reason::DeadlineExceeded,
            Error::Database(_) | Error::Internal(_) | Error::Startup(_) => Reason::Internal,
        }
    }

    /// How long a caller should wait before retrying, when retrying can help.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            Error::DatabaseDown(_) => Some(RETRY_DELAY_DATABASE_DOWN),
            Error::LoginThrottled { retry_after, .. } => Some(*retry_after),
            Error::Unavailable(_) | Error::Overloaded(_) | Error::ServerBusy { .. } => {
                Some(RETRY_DELAY_BUSY)
            }
            _ => None,
        }
    }

    /// The error details sent with the status: always an `ErrorInfo`; a `BadRequest` for a
    /// bad field; a `RetryInfo` when a retry can help. (A request too large is
    /// RESOURCE_EXHAUSTED but gets no `RetryInfo`: the same request would fail again.)
    fn details(&self) -> ErrorDetails {
        let mut metadata = HashMap::new();
        match self {
            Error::InvalidArgument { field, rule, .. } => {
                metadata.insert("field".to_owned(), (*field).to_owned());
                metadata.insert("rule".to_owned(), rule.as_str().to_owned());
            }
            Error::ServerBusy { max_in_flight } => {
                metadata.insert("max_in_flight".to_owned(), max_in_flight.to_string());
            }
            Error::RequestTooLarge { limit_bytes } => {
                metadata.insert("limit_bytes".to_owned(), limit_bytes.to_string());
            }
            Error::LoginThrottled { limit, .. } => {
                metadata.insert("limit".to_owned(), (*limit).to_owned());
            }
            Error::NotAdmin { admin_nivel } => {
                metadata.insert("admin_nivel".to_owned(), admin_nivel.to_string());
            }
            _ => {}
        }
        let mut details =
            ErrorDetails::with_error_info(self.reason().as_str(), ERROR_DOMAIN, metadata);
        if let Error::InvalidArgument {
            field,
            rule,
            message,
        } = self
        {
            let description = message
                .strip_prefix(*field)
                .and_then(|rest| rest.strip_prefix(": "))
                .unwrap_or(message);
            let mut violation = FieldViolation::new(*field, description);
            violation.reason = rule.as_str().to_owned();
            details.set_bad_request(vec![violation]);
        }
        if let Some(delay) = self.retry_delay() {
            details.set_retry_info(Some(delay));
        }
        details
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
        let details = err.details();
        let message = match &err {
            Error::Unavailable(detail) | Error::DatabaseDown(detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                "database unavailable, retry later".to_owned()
            }
            Error::Database(source) => {
                tracing::error!(error = %source, "database error");
                "internal error".to_owned()
            }
            Error::Internal(detail) | Error::Startup(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        Status::with_error_details(err.code(), message, details)
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
        let status = Status::from(Error::InvalidArgument {
            field: "usuario",
            rule: Rule::Empty,
            message: "usuario: must not be empty".into(),
        });
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
            Status::from(Error::Unauthenticated(Reason::AdminTokenMissing, "x")).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            Status::from(Error::PermissionDenied(Reason::AdminDisabled, "x")).code(),
            Code::PermissionDenied
        );
    }

    fn details_of(err: Error) -> (Status, ErrorDetails) {
        let status = Status::from(err);
        let details = status.check_error_details().expect("details decode");
        (status, details)
    }

    #[test]
    fn every_error_carries_an_error_info_in_the_produto_domain() {
        for (err, reason) in [
            (
                Error::NotFound("usuario 'x' not found".into()),
                "USER_NOT_FOUND",
            ),
            (Error::AlreadyExists("x".into()), "USER_EXISTS"),
            (Error::Database(sqlx::Error::RowNotFound), "INTERNAL"),
            (Error::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (Error::Overloaded("busy"), "OVERLOADED"),
            (
                Error::RequestTooLarge { limit_bytes: 10 },
                "REQUEST_TOO_LARGE",
            ),
            (Error::MalformedRequest("bad".into()), "MALFORMED_REQUEST"),
        ] {
            let (_, details) = details_of(err);
            let info = details.error_info().expect("an ErrorInfo");
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    #[test]
    fn a_bad_field_carries_a_bad_request_naming_the_field_and_rule() {
        let (status, details) = details_of(Error::InvalidArgument {
            field: "nivel",
            rule: Rule::Negative,
            message: "nivel: must be 0 or greater (got -1)".into(),
        });
        assert_eq!(status.message(), "nivel: must be 0 or greater (got -1)");
        let violations = &details
            .bad_request()
            .expect("a BadRequest")
            .field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "nivel");
        assert_eq!(violations[0].reason, "NEGATIVE");
        assert_eq!(violations[0].description, "must be 0 or greater (got -1)");
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "INVALID_FIELD");
        assert_eq!(
            info.metadata.get("field").map(String::as_str),
            Some("nivel")
        );
        assert!(details.retry_info().is_none());
    }

    #[test]
    fn a_short_or_common_new_password_is_a_weak_password() {
        for rule in [Rule::TooShort, Rule::TooCommon] {
            let err = Error::InvalidArgument {
                field: "senha",
                rule,
                message: "senha: x".into(),
            };
            assert_eq!(err.reason(), Reason::WeakPassword);
        }
        let empty = Error::InvalidArgument {
            field: "senha",
            rule: Rule::Empty,
            message: "senha: must not be empty".into(),
        };
        assert_eq!(empty.reason(), Reason::InvalidField);
    }

    #[test]
    fn retry_delays_are_longer_while_the_database_is_down() {
        let delay = |err: Error| details_of(err).1.retry_info().and_then(|r| r.retry_delay);
        assert_eq!(
            delay(Error::DatabaseDown("probe failed".into())),
            Some(RETRY_DELAY_DATABASE_DOWN)
        );
        assert_eq!(
            delay(Error::Unavailable("pool timeout".into())),
            Some(RETRY_DELAY_BUSY)
        );
        assert_eq!(delay(Error::Overloaded("busy")), Some(RETRY_DELAY_BUSY));
        assert_eq!(
            delay(Error::ServerBusy { max_in_flight: 4 }),
            Some(RETRY_DELAY_BUSY)
        );
        assert!(RETRY_DELAY_BUSY < RETRY_DELAY_DATABASE_DOWN);
        let throttled = Error::LoginThrottled {
            limit: "caller",
            retry_after: Duration::from_secs(42),
        };
        assert_eq!(throttled.code(), Code::ResourceExhausted);
        let (status, details) = details_of(throttled);
        assert_eq!(status.message(), "too many login attempts; retry in 42 s");
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "LOGIN_THROTTLED");
        assert_eq!(
            info.metadata.get("limit").map(String::as_str),
            Some("caller")
        );
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(42))
        );
        assert_eq!(delay(Error::RequestTooLarge { limit_bytes: 4 }), None);
        assert_eq!(delay(Error::NotFound("x".into())), None);
        let (status, _) = details_of(Error::DatabaseDown("10.0.0.7 refused".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "database unavailable, retry later");
    }
}
