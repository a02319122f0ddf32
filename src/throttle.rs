//! Brute-force throttling of logins, counted in the database so that every produto instance
//! shares the counts.
//!
//! An attempt counts when it starts: it claims a slot with one atomic upsert before the
//! password is looked at, so guesses sent at the same time cannot all slip under the limit.
//! Slots are counted per (username, caller) and per username; see the README's Security
//! section for the policy. A refusal looks exactly like a wrong password (same answer, same
//! work: the dummy hash is verified), for known and unknown usernames alike.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio_util::sync::CancellationToken;
use tonic::{Extensions, Request, metadata::MetadataMap};

use crate::{Error, db::Db, domain::Usuario};

/// The metadata key through which a trusted caller (the bot, another service) names the end
/// user it calls for, e.g. `telegram:12345`.
pub const END_USER_KEY: &str = "produto-end-user";
/// The `identidade` of the row that counts every caller's attempts on a username.
const EVERY_CALLER: &str = "*";
/// Longest end-user name taken; a longer one is ignored (the peer's address is used).
const END_USER_MAX_LEN: usize = 128;
/// Rows deleted per purge statement, and statements per purge run: each statement is short,
/// and one run removes up to 50 000 expired rows.
const PURGE_BATCH: i64 = 1000;
const PURGE_BATCHES_PER_RUN: usize = 50;
/// Purges run every window, but at least this often.
const PURGE_EVERY_MAX: Duration = Duration::from_secs(60);

/// Whether a call comes from an authenticated caller, whose `produto-end-user` is believed
/// under [`TrustEndUser::Authenticated`]. Given the call's metadata and extensions (where the
/// transport puts the client certificate, and an authentication layer can put its verdict).
pub type AuthenticatedCaller = fn(&MetadataMap, &Extensions) -> bool;

/// The default [`AuthenticatedCaller`]: the caller authentication in [`crate::auth`] named
/// the caller (a token of PRODUTO_CALLER_TOKENS_FILE, or a client certificate), or the call
/// came over mutual TLS with a certificate the server verified.
pub fn is_authenticated(metadata: &MetadataMap, extensions: &Extensions) -> bool {
    extensions.get::<crate::auth::Caller>().is_some()
        || has_client_certificate(metadata, extensions)
}

/// The call came over mutual TLS with a client certificate that the server verified
/// against PRODUTO_TLS_CLIENT_CA.
pub fn has_client_certificate(_: &MetadataMap, extensions: &Extensions) -> bool {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .is_some_and(|certs| !certs.is_empty())
}

/// When a login's `produto-end-user` metadata is believed (see `crate::throttle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrustEndUser {
    /// Never: the caller is the peer's IP address.
    Never,
    /// From callers that authenticated themselves (a client certificate, by default).
    Authenticated,
    /// From every caller: only where nothing but trusted services can reach the port.
    Always,
}

/// The throttling policy.
#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    /// Attempts allowed per (username, caller) per window; 0 turns throttling off.
    pub max_failures: u32,
    /// Attempts allowed per username from all callers per window; 0: no such ceiling.
    pub max_failures_per_user: u32,
    pub window: Duration,
    /// Whose `produto-end-user` is believed.
    pub trust_end_user: TrustEndUser,
    /// Decides who is authenticated, for [`TrustEndUser::Authenticated`].
    pub authenticated: AuthenticatedCaller,
}

/// The throttling flags, flattened into the server's command line by `config.rs`.
#[derive(Debug, Clone, clap::Args)]
pub struct ThrottleFlags {
    /// Login attempts allowed per username and caller (end user or IP address) within
    /// PRODUTO_LOGIN_WINDOW; past it, that caller's attempts on that username are refused
    /// unchecked (0: no throttling). A success clears the caller's count.
    #[arg(long, env = "PRODUTO_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,

    /// Login attempts allowed per username from all callers together within
    /// PRODUTO_LOGIN_WINDOW: bounds a guessing attack spread over many callers (0: no ceiling).
    #[arg(
        long,
        env = "PRODUTO_LOGIN_MAX_FAILURES_PER_USER",
        default_value_t = 50
    )]
    pub login_max_failures_per_user: u32,

    /// Whose `produto-end-user` metadata names the caller for throttling: `authenticated`
    /// callers only (a client certificate), `always` (every caller is a trusted service), or
    /// `never` (the peer's IP address always).
    #[arg(long, env = "PRODUTO_LOGIN_TRUST_END_USER", value_enum, default_value_t = TrustEndUser::Authenticated)]
    pub login_trust_end_user: TrustEndUser,

    /// The window failed logins are counted in (e.g. `15m`).
    #[arg(long, env = "PRODUTO_LOGIN_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub login_window: Duration,
}

impl ThrottleFlags {
    /// Checks what clap cannot: the two ceilings against each other, and a window to count in.
    pub fn validate(&self) -> Result<(), String> {
        if self.login_max_failures_per_user != 0
            && self.login_max_failures_per_user < self.login_max_failures
        {
            return Err(format!(
                "PRODUTO_LOGIN_MAX_FAILURES_PER_USER ({}) is smaller than PRODUTO_LOGIN_MAX_FAILURES ({})",
                self.login_max_failures_per_user, self.login_max_failures
            ));
        }
        if self.login_max_failures != 0 && self.login_window.is_zero() {
            return Err("PRODUTO_LOGIN_WINDOW must be greater than zero".into());
        }
        Ok(())
    }

    /// The throttling policy.
    pub fn settings(&self) -> LoginThrottle {
        LoginThrottle {
            max_failures: self.login_max_failures,
            max_failures_per_user: self.login_max_failures_per_user,
            window: self.login_window,
            trust_end_user: self.login_trust_end_user,
            authenticated: is_authenticated,
        }
    }
}

/// Who is trying to log in, as far as throttling can tell.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `end-user:<name>` when a trusted caller named its end user, else `ip:<address>`
    /// (an IPv6 address by its /64, which one subscriber commonly holds whole).
    pub identity: String,
    pub peer: Option<SocketAddr>,
}

/// The outcome of claiming a slot for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Throttling is off.
    Unthrottled,
    /// Within the limits: verify the password.
    Allowed,
    /// This caller has used its attempts on this username.
    RefusedCaller,
    /// All callers together have used the username's attempts.
    RefusedUser,
}

impl Attempt {
    pub fn is_refused(self) -> bool {
        matches!(self, Attempt::RefusedCaller | Attempt::RefusedUser)
    }
}

/// An allowed attempt whose outcome the caller has not received yet. Dropped unsettled
/// (the caller went away: deadline, disconnect), it gives the attempt back in a task of its
/// own: a caller that never sees an answer has learnt nothing, and a user whose calls time
/// out under load is not locked out by them.
pub struct Pending(Option<(LoginThrottle, Db, Usuario, Caller)>);

impl Pending {
    /// The caller is about to get its answer: the attempt stays counted (or was settled).
    pub fn settle(mut self) {
        self.0 = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some((throttle, db, usuario, caller)) = self.0.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = throttle
                    .not_checked(&db, &usuario, &caller, Attempt::Allowed)
                    .await
                {
                    tracing::warn!(error = %e, "could not refund an abandoned login attempt");
                }
            });
        }
    }
}

impl LoginThrottle {
    /// Who is calling: the end user a trusted caller names, else the peer's address.
    pub fn caller<T>(&self, request: &Request<T>) -> Caller {
        let peer = request.remote_addr();
        let trusted = match self.trust_end_user {
            TrustEndUser::Never => false,
            TrustEndUser::Always => true,
            TrustEndUser::Authenticated => {
                (self.authenticated)(request.metadata(), request.extensions())
            }
        };
        let end_user = request
            .metadata()
            .get(END_USER_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|name| {
                !name.is_empty()
                    && name.len() <= END_USER_MAX_LEN
                    && name.bytes().all(|b| b.is_ascii_graphic())
            });
        let identity = match (trusted, end_user, peer) {
            (true, Some(name), _) => format!("end-user:{name}"),
            (_, _, Some(addr)) => format!("ip:{}", network_of(addr.ip())),
            (_, _, None) => "ip:unknown".to_owned(),
        };
        Caller { identity, peer }
    }

    /// Claims a slot for an attempt by `caller` on `usuario`, before the password is
    /// checked: the caller's own slot first, then (only if that was granted, so that a
    /// locked-out caller cannot use up everyone's) the username's.
    pub async fn begin(
        &self,
        db: &Db,
        usuario: &Usuario,
        caller: &Caller,
    ) -> Result<Attempt, Error> {
        if self.max_failures == 0 {
            return Ok(Attempt::Unthrottled);
        }
        let (now, window_start) = (now_ms(), self.window_start_ms());
        let own = db
            .claim_login_attempt(usuario, &caller.identity, now, window_start)
            .await?;
        if own > self.max_failures {
            return Ok(Attempt::RefusedCaller);
        }
        if self.max_failures_per_user != 0 {
            let all = db
                .claim_login_attempt(usuario, EVERY_CALLER, now, window_start)
                .await?;
            if all > self.max_failures_per_user {
                // Not checked, so not held against this caller: a victim that tries while
                // the username is locked keeps its own attempts for when the lock ends.
                db.refund_login_attempt(usuario, &caller.identity).await?;
                return Ok(Attempt::RefusedUser);
            }
        }
        Ok(Attempt::Allowed)
    }

    /// After an allowed attempt that logged in: the caller has shown it knows the password,
    /// so its count is cleared; the username's count gets this attempt back.
    pub async fn succeeded(
        &self,
        db: &Db,
        usuario: &Usuario,
        caller: &Caller,
        attempt: Attempt,
    ) -> Result<(), Error> {
        self.give_back(db, usuario, caller, attempt, true).await
    }

    /// After an allowed attempt whose password could not be checked (the server shed it, or
    /// failed): the attempt is given back to both counts.
    pub async fn not_checked(
        &self,
        db: &Db,
        usuario: &Usuario,
        caller: &Caller,
        attempt: Attempt,
    ) -> Result<(), Error> {
        self.give_back(db, usuario, caller, attempt, false).await
    }

    /// Gives an allowed attempt back to the username's count, and clears the caller's count
    /// (`clear_caller`) or gives the attempt back to it too.
    async fn give_back(
        &self,
        db: &Db,
        usuario: &Usuario,
        caller: &Caller,
        attempt: Attempt,
        clear_caller: bool,
    ) -> Result<(), Error> {
        if attempt != Attempt::Allowed {
            return Ok(());
        }
        if clear_caller {
            db.clear_login_attempts(usuario, &caller.identity).await?;
        } else {
            db.refund_login_attempt(usuario, &caller.identity).await?;
        }
        if self.max_failures_per_user != 0 {
            db.refund_login_attempt(usuario, EVERY_CALLER).await?;
        }
        Ok(())
    }

    /// Deletes the rows whose window has passed, in bounded batches; returns how many.
    pub async fn purge(&self, db: &Db) -> Result<u64, Error> {
        let window_start = self.window_start_ms();
        let mut deleted = 0;
        for _ in 0..PURGE_BATCHES_PER_RUN {
            let n = db.purge_login_attempts(window_start, PURGE_BATCH).await?;
            deleted += n;
            if n < PURGE_BATCH.unsigned_abs() {
                break;
            }
        }
        Ok(deleted)
    }

    /// Purges expired rows every window (at least every minute) until stopped, so that a
    /// flood of random usernames costs bounded space.
    pub async fn purge_until_stopped(self, db: Db, stop: CancellationToken) {
        let every = self
            .window
            .clamp(Duration::from_millis(100), PURGE_EVERY_MAX);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if !db.is_migrated() {
                continue;
            }
            let purged = tokio::select! {
                () = stop.cancelled() => return,
                purged = self.purge(&db) => purged,
            };
            match purged {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "expired login attempts purged"),
                Err(e) => tracing::warn!(error = %e, "could not purge expired login attempts"),
            }
        }
    }

    /// Guards an attempt until its caller gets the answer (see [`Pending`]).
    pub fn pending(
        &self,
        db: &Db,
        usuario: &Usuario,
        caller: &Caller,
        attempt: Attempt,
    ) -> Pending {
        Pending(
            (attempt == Attempt::Allowed)
                .then(|| (*self, db.clone(), usuario.clone(), caller.clone())),
        )
    }

    fn window_start_ms(&self) -> i64 {
        now_ms() - i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The address that stands for a caller: an IPv4 address itself, an IPv6 address its /64.
fn network_of(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(trust_end_user: TrustEndUser) -> LoginThrottle {
        LoginThrottle {
            max_failures: 5,
            max_failures_per_user: 50,
            window: Duration::from_secs(60),
            trust_end_user,
            authenticated: has_client_certificate,
        }
    }

    fn request(peer: &str, end_user: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer.parse().unwrap()),
            });
        if let Some(name) = end_user {
            request
                .metadata_mut()
                .insert(END_USER_KEY, name.parse().unwrap());
        }
        request
    }

    #[test]
    fn the_end_user_is_believed_only_as_configured() {
        let named = request("10.0.0.7:4000", Some("telegram:42"));
        let identity = |trust| throttle(trust).caller(&named).identity;
        assert_eq!(identity(TrustEndUser::Always), "end-user:telegram:42");
        assert_eq!(identity(TrustEndUser::Never), "ip:10.0.0.7");
        // Without a client certificate, nobody is authenticated by default.
        assert_eq!(identity(TrustEndUser::Authenticated), "ip:10.0.0.7");
        let mut custom = throttle(TrustEndUser::Authenticated);
        custom.authenticated = |metadata, _| metadata.contains_key("x-test-authenticated");
        let mut vouched = request("10.0.0.7:4000", Some("telegram:42"));
        vouched
            .metadata_mut()
            .insert("x-test-authenticated", "1".parse().unwrap());
        assert_eq!(custom.caller(&vouched).identity, "end-user:telegram:42");
    }

    #[test]
    fn odd_end_user_names_fall_back_to_the_address() {
        let t = throttle(TrustEndUser::Always);
        let long = "x".repeat(END_USER_MAX_LEN + 1);
        for name in ["", "a b", long.as_str()] {
            let mut r = request("10.0.0.7:4000", None);
            r.metadata_mut().insert(END_USER_KEY, name.parse().unwrap());
            assert_eq!(t.caller(&r).identity, "ip:10.0.0.7", "{name:?}");
        }
    }

    #[test]
    fn ipv6_callers_are_counted_by_their_64() {
        let t = throttle(TrustEndUser::Never);
        let a = t.caller(&request("[2001:db8:1:2:aaaa::1]:4000", None));
        let b = t.caller(&request("[2001:db8:1:2:bbbb::9]:4000", None));
        assert_eq!(a.identity, "ip:2001:db8:1:2::/64");
        assert_eq!(a.identity, b.identity);
        let mapped = t.caller(&request("[::ffff:10.0.0.7]:4000", None));
        assert_eq!(mapped.identity, "ip:10.0.0.7");
    }
}
