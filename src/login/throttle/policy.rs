//! The throttling policy and who is calling: the settings ([`LoginThrottle`]) and the flags
//! they come from ([`ThrottleFlags`]), whose `produto-end-user` is believed, the caller's
//! identity a count is kept under, and the window arithmetic.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tonic::{Extensions, Request, metadata::MetadataMap};

/// The metadata key through which a trusted caller (the bot, another service) names the end
/// user it calls for, e.g. `telegram:12345`.
pub const END_USER_KEY: &str = "produto-end-user";
/// Longest end-user name taken; a longer one is ignored (the peer's address is used).
const END_USER_MAX_LEN: usize = 128;

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

/// When a login's `produto-end-user` metadata is believed (see `crate::login::throttle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrustEndUser {
    /// Never: the caller is the peer's IP address.
    Never,
    /// From callers that authenticated themselves (a client certificate, by default).
    Authenticated,
    /// From every caller: only where nothing but trusted services can reach the port.
    Always,
}

/// The throttling flags' defaults: the one place each is written, read by clap's attributes
/// and by [`LoginThrottle::default`].
pub mod defaults {
    use super::TrustEndUser;

    pub const MAX_FAILURES: u32 = 5;
    pub const MAX_FAILURES_PER_USER: u32 = 50;
    pub const TRUST_END_USER: TrustEndUser = TrustEndUser::Authenticated;
    pub const WINDOW: &str = "15m";
    pub const TELL_AUTHENTICATED: bool = true;
}

/// The throttling policy.
#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    /// Failed attempts allowed per (username, caller) per window; 0 turns throttling off.
    pub max_failures: u32,
    /// Failed attempts allowed per username from all callers per window; 0: no such ceiling.
    pub max_failures_per_user: u32,
    pub window: Duration,
    /// Whose `produto-end-user` is believed.
    pub trust_end_user: TrustEndUser,
    /// Decides who is authenticated, for [`TrustEndUser::Authenticated`] and for
    /// `tell_authenticated`.
    pub authenticated: AuthenticatedCaller,
    /// Whether an authenticated caller is told that a login was throttled
    /// (RESOURCE_EXHAUSTED, `LOGIN_THROTTLED`, with `RetryInfo`) rather than answered as a
    /// wrong password. Anonymous callers never are.
    pub tell_authenticated: bool,
}

/// The flags' defaults; callers are told apart by [`is_authenticated`].
impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            max_failures: defaults::MAX_FAILURES,
            max_failures_per_user: defaults::MAX_FAILURES_PER_USER,
            window: crate::db::default_duration(defaults::WINDOW),
            trust_end_user: defaults::TRUST_END_USER,
            authenticated: is_authenticated,
            tell_authenticated: defaults::TELL_AUTHENTICATED,
        }
    }
}

/// The throttling flags, flattened into the server's command line by `config.rs`.
#[derive(Debug, Clone, clap::Args)]
pub struct ThrottleFlags {
    /// Failed login attempts allowed per username and caller (end user or IP address) within
    /// PRODUTO_LOGIN_WINDOW; past it, that caller's attempts on that username are refused
    /// unchecked (0: no throttling). Attempts in flight hold a slot until they resolve (more
    /// wait for them); a success clears the caller's failures.
    #[arg(long, env = "PRODUTO_LOGIN_MAX_FAILURES", default_value_t = defaults::MAX_FAILURES)]
    pub login_max_failures: u32,

    /// Failed login attempts allowed per username from all callers together within
    /// PRODUTO_LOGIN_WINDOW: bounds a guessing attack spread over many callers (0: no ceiling).
    #[arg(
        long,
        env = "PRODUTO_LOGIN_MAX_FAILURES_PER_USER",
        default_value_t = defaults::MAX_FAILURES_PER_USER
    )]
    pub login_max_failures_per_user: u32,

    /// Whose `produto-end-user` metadata names the caller for throttling: `authenticated`
    /// callers only (a client certificate), `always` (every caller is a trusted service), or
    /// `never` (the peer's IP address always).
    #[arg(long, env = "PRODUTO_LOGIN_TRUST_END_USER", value_enum, default_value_t = defaults::TRUST_END_USER)]
    pub login_trust_end_user: TrustEndUser,

    /// The window failed logins are counted in (e.g. `15m`).
    #[arg(long, env = "PRODUTO_LOGIN_WINDOW", default_value = defaults::WINDOW, value_parser = humantime::parse_duration)]
    pub login_window: Duration,

    /// Tell an authenticated caller (caller token or client certificate) that a login was
    /// throttled: RESOURCE_EXHAUSTED, reason LOGIN_THROTTLED, RetryInfo when the window
    /// frees; `false` answers it as a wrong password, as every anonymous caller is answered.
    #[arg(
        long,
        env = "PRODUTO_LOGIN_TELL_AUTHENTICATED",
        default_value_t = defaults::TELL_AUTHENTICATED,
        action = clap::ArgAction::Set
    )]
    pub login_tell_authenticated: bool,
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
            tell_authenticated: self.login_tell_authenticated,
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
    /// The caller authenticated itself (a caller token or a client certificate).
    pub authenticated: bool,
}

impl LoginThrottle {
    /// Who is calling: the end user a trusted caller names, else the peer's address.
    pub fn caller<T>(&self, request: &Request<T>) -> Caller {
        let peer = request.remote_addr();
        let authenticated = (self.authenticated)(request.metadata(), request.extensions());
        let trusted = match self.trust_end_user {
            TrustEndUser::Never => false,
            TrustEndUser::Always => true,
            TrustEndUser::Authenticated => authenticated,
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
        Caller {
            identity,
            peer,
            authenticated,
        }
    }

    /// Whether `caller` is told the truth about a throttled login.
    pub fn tells(&self, caller: &Caller) -> bool {
        self.tell_authenticated && caller.authenticated
    }

    pub(super) fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }

    pub(super) fn window_start_ms(&self) -> i64 {
        now_ms().saturating_sub(self.window_ms())
    }

    /// How long until a window begun at `began_ms` ends, in whole seconds (at least one).
    pub(super) fn retry_after(&self, began_ms: i64) -> Duration {
        let left = began_ms.saturating_add(self.window_ms()) - now_ms();
        let left = u64::try_from(left).unwrap_or(0);
        Duration::from_secs(left.div_ceil(1000).max(1))
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

/// Now, in Unix milliseconds: the clock the counts' windows are measured in.
pub(super) fn now_ms() -> i64 {
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
            tell_authenticated: true,
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
