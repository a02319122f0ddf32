//! The admin token: the one secret that guards the admin operations, checked in constant time.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use crate::{Error, error::Reason};

/// The metadata key of the admin token beside a caller token.
pub const ADMIN_TOKEN_KEY: &str = "produto-admin-token";

/// The configured admin token, if any. Its `Debug` never shows it.
#[derive(Clone, Default)]
pub struct AdminToken(Option<Arc<[u8]>>);

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        AdminToken(token.map(|t| Arc::from(t.as_bytes())))
    }

    /// Checks the admin token in constant time (for tokens of the right length; a length
    /// mismatch is rejected at once, which reveals only the length). It is read from
    /// `produto-admin-token: <token>`, or else from `authorization: Bearer <token>`: with
    /// caller authentication by token, `authorization` carries the caller's token, so the
    /// admin token travels in its own key; clients of a server without caller tokens keep
    /// sending it in `authorization`.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Error> {
        let Some(expected) = &self.0 else {
            return Err(Error::PermissionDenied(
                Reason::AdminDisabled,
                "admin operations (AdicionarUsuario, AlterarNivel, ...) are disabled: start the \
                 server with PRODUTO_ADMIN_TOKEN set",
            ));
        };
        let given = metadata
            .get(ADMIN_TOKEN_KEY)
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                metadata
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(super::bearer)
            })
            .ok_or(Error::Unauthenticated(
                Reason::AdminTokenMissing,
                "missing admin token: send metadata 'produto-admin-token: <token>' (or \
                 'authorization: Bearer <token>' when the server takes no caller tokens)",
            ))?;
        if bool::from(given.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(Error::Unauthenticated(
                Reason::AdminTokenInvalid,
                "invalid admin token",
            ))
        }
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AdminToken(set)"
        } else {
            "AdminToken(unset)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn with_auth(value: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert("authorization", value.parse().unwrap());
        md
    }

    fn code(token: &AdminToken, md: &MetadataMap) -> Option<Code> {
        token.check(md).err().map(|e| tonic::Status::from(e).code())
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let token = AdminToken::new(Some("s3cret-token-value"));
        assert_eq!(code(&token, &with_auth("Bearer s3cret-token-value")), None);
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme} s3cret-token-value");
            assert_eq!(code(&token, &with_auth(&value)), None, "{scheme}");
        }
        assert_eq!(
            code(&token, &with_auth("Bearers3cret-token-value")),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            code(&token, &with_auth("Bearer s3cret-token-valuX")),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            code(&token, &with_auth("Bearer s3cret")),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            code(&token, &with_auth("s3cret-token-value")),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            code(&token, &MetadataMap::new()),
            Some(Code::Unauthenticated)
        );
    }

    #[test]
    fn the_admin_token_may_come_in_its_own_key_beside_a_caller_token() {
        let token = AdminToken::new(Some("s3cret-token-value"));
        let mut md = with_auth("Bearer caller-token-0123456789");
        assert_eq!(code(&token, &md), Some(Code::Unauthenticated));
        md.insert(ADMIN_TOKEN_KEY, "s3cret-token-value".parse().unwrap());
        assert_eq!(code(&token, &md), None);
        md.insert(ADMIN_TOKEN_KEY, "s3cret-token-valuX".parse().unwrap());
        assert_eq!(code(&token, &md), Some(Code::Unauthenticated));
    }

    #[test]
    fn no_configured_token_means_permission_denied() {
        let token = AdminToken::new(None);
        assert_eq!(
            code(&token, &with_auth("Bearer anything")),
            Some(Code::PermissionDenied)
        );
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        assert!(!format!("{:?}", AdminToken::new(Some("s3cret"))).contains("s3cret"));
    }
}
