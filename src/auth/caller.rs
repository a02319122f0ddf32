//! Caller identity: a bearer token per calling service or its client certificate, checked by
//! the RPC middleware, and the caller's label in metrics and logs.

use std::{path::Path, sync::Arc};

use subtle::ConstantTimeEq;

use crate::{Error, error::Reason};

/// Who is calling: a service named by its bearer token or its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    pub via: Via,
}

/// How a caller proved its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `authorization: Bearer <token>`, a token of `PRODUTO_CALLER_TOKENS_FILE`.
    Token,
    /// A client certificate signed by `PRODUTO_TLS_CLIENT_CA` (its first DNS name).
    Certificate,
}

/// The authenticated caller of a request, when there is one: set by the RPC middleware in
/// the request's extensions before any handler runs. `None` when the call carried no
/// identity (possible only with caller authentication off).
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

/// Most distinct certificate names given their own metric label; later ones are counted
/// as `unknown` (token names are bounded by the tokens file already).
const MAX_CERT_LABELS: usize = 64;

/// The metric label of a call without an identity.
pub const ANONYMOUS: &str = "anonymous";
/// The metric label of a certificate caller past [`MAX_CERT_LABELS`].
pub const UNKNOWN: &str = "unknown";

/// Caller authentication: the configured tokens, and whether an identity is required.
#[derive(Default)]
pub struct CallerAuth {
    required: bool,
    /// `(name, token)`, from the tokens file.
    tokens: Vec<(Arc<str>, Box<[u8]>)>,
    /// Certificate names seen so far that have a label of their own.
    cert_labels: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
}

impl std::fmt::Debug for CallerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| &**n).collect();
        f.debug_struct("CallerAuth")
            .field("required", &self.required)
            .field("token_callers", &names)
            .finish_non_exhaustive()
    }
}

impl CallerAuth {
    /// [`CallerAuth::new`] over the tokens file at `path`, read once at start.
    pub fn from_file(required: bool, path: Option<&Path>) -> Result<Self, String> {
        let tokens = match path {
            None => None,
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "PRODUTO_CALLER_TOKENS_FILE: cannot read {}: {e}",
                    path.display()
                )
            })?),
        };
        CallerAuth::new(required, tokens.as_deref())
    }

    /// `required`: refuse calls without an identity. `tokens_file`: the text of
    /// `PRODUTO_CALLER_TOKENS_FILE`, one `name token` per line (`#` comments and blank lines
    /// ignored).
    pub fn new(required: bool, tokens_file: Option<&str>) -> Result<Self, String> {
        let mut tokens: Vec<(Arc<str>, Box<[u8]>)> = Vec::new();
        for (i, line) in tokens_file.unwrap_or_default().lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("PRODUTO_CALLER_TOKENS_FILE line {}", i + 1);
            let (name, token) = line
                .split_once(char::is_whitespace)
                .map(|(n, t)| (n, t.trim()))
                .ok_or_else(|| format!("{}: expected `name token`", at()))?;
            let valid_name = name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid_name || name == ANONYMOUS || name == UNKNOWN {
                return Err(format!(
                    "{}: a caller name is 1-64 of [A-Za-z0-9._-], not `anonymous` or `unknown`",
                    at()
                ));
            }
            if token.len() < 16 || token.contains(char::is_whitespace) {
                return Err(format!(
                    "{}: the token must be at least 16 characters, without spaces",
                    at()
                ));
            }
            if tokens
                .iter()
                .any(|(n, t)| &**n == name || **t == *token.as_bytes())
            {
                return Err(format!("{}: caller name or token repeated", at()));
            }
            tokens.push((name.into(), token.as_bytes().into()));
        }
        Ok(CallerAuth {
            required,
            tokens,
            cert_labels: Default::default(),
        })
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// The caller of a request: its client certificate first, then its bearer token. With
    /// authentication required, a call without either is UNAUTHENTICATED (its message says
    /// how to present one); a bearer token that matches no caller is UNAUTHENTICATED too
    /// when required, and ignored when not (it may be the admin token of an older client).
    pub fn identify(
        &self,
        headers: &tonic::codegen::http::HeaderMap,
        peer_certs: Option<&[tonic::transport::CertificateDer<'_>]>,
    ) -> Result<Option<Caller>, Error> {
        if let Some(name) = peer_certs
            .and_then(|c| c.first())
            .and_then(certificate_name)
        {
            return Ok(Some(Caller {
                name: name.into(),
                via: Via::Certificate,
            }));
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(super::bearer);
        if let Some(given) = bearer {
            // Every token is compared, in constant time, so that the time taken does not
            // say which one (or how much of one) matched.
            let mut found = None;
            for (name, token) in &self.tokens {
                if bool::from(given.as_bytes().ct_eq(token)) {
                    found = Some(name.clone());
                }
            }
            if let Some(name) = found {
                return Ok(Some(Caller {
                    name,
                    via: Via::Token,
                }));
            }
            if self.required {
                return Err(Error::Unauthenticated(
                    Reason::CallerTokenInvalid,
                    "unknown caller token: send `authorization: Bearer <token>` with a token \
                     of PRODUTO_CALLER_TOKENS_FILE (the admin token goes in `produto-admin-token`)",
                ));
            }
        }
        if self.required {
            return Err(Error::Unauthenticated(
                Reason::CallerMissing,
                "caller authentication required: send `authorization: Bearer <caller token>` \
                 or connect with a client certificate (health and reflection need neither)",
            ));
        }
        Ok(None)
    }

    /// The metric label of a caller: bounded by the tokens file and [`MAX_CERT_LABELS`].
    pub fn label(&self, caller: Option<&Caller>) -> Arc<str> {
        // One shared allocation: most calls are anonymous where authentication is off.
        static ANONYMOUS_LABEL: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| ANONYMOUS.into());
        let Some(caller) = caller else {
            return ANONYMOUS_LABEL.clone();
        };
        if caller.via == Via::Token {
            return caller.name.clone();
        }
        let mut seen = self
            .cert_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&caller.name) || seen.len() < MAX_CERT_LABELS {
            seen.insert(caller.name.clone());
            caller.name.clone()
        } else {
            UNKNOWN.into()
        }
    }
}

/// A certificate's caller name: its first DNS subject alternative name (the certificate
/// was already verified against the CA by the TLS handshake; this only reads it).
fn certificate_name(der: &tonic::transport::CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    cert.valid_dns_names().next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn caller_tokens_name_their_caller_and_are_never_shown() {
        let file =
            "# name token\nbilling  billing-token-0123456789\n\nbot bot-token-0123456789ab\n";
        let auth = CallerAuth::new(true, Some(file)).unwrap();
        let headers = |v: &str| {
            let mut h = tonic::codegen::http::HeaderMap::new();
            h.insert("authorization", v.parse().unwrap());
            h
        };
        let caller = auth
            .identify(&headers("Bearer billing-token-0123456789"), None)
            .unwrap()
            .unwrap();
        assert_eq!((&*caller.name, caller.via), ("billing", Via::Token));
        assert_eq!(&*auth.label(Some(&caller)), "billing");
        let lower = auth
            .identify(&headers("bearer billing-token-0123456789"), None)
            .unwrap()
            .unwrap();
        assert_eq!(&*lower.name, "billing");
        assert_eq!(&*auth.label(None), ANONYMOUS);
        for bad in [
            "Bearer billing-token-0123456780",
            "Bearer ",
            "billing-token-0123456789",
        ] {
            let err = tonic::Status::from(auth.identify(&headers(bad), None).unwrap_err());
            assert_eq!(err.code(), Code::Unauthenticated, "{bad}");
        }
        let err = tonic::Status::from(
            auth.identify(&tonic::codegen::http::HeaderMap::new(), None)
                .unwrap_err(),
        );
        assert!(
            err.message().contains("authorization: Bearer"),
            "{}",
            err.message()
        );
        assert!(!format!("{auth:?}").contains("token-0123"), "{auth:?}");
        // Off: no identity is fine, and an unknown bearer (an admin token) is ignored.
        let off = CallerAuth::new(false, Some(file)).unwrap();
        assert_eq!(
            off.identify(&headers("Bearer admin-xyz"), None).unwrap(),
            None
        );
    }

    #[test]
    fn bad_token_files_are_refused_naming_the_line() {
        for bad in [
            "billing",
            "billing short",
            "anonymous token-0123456789abcdef",
            "a b/c token-0123456789abcdef",
            "a token-0123456789abcdef\nb token-0123456789abcdef",
        ] {
            let err = CallerAuth::new(true, Some(bad)).unwrap_err();
            assert!(err.contains("line"), "{bad}: {err}");
        }
    }
}
