//! Request ids: taken from the caller's `x-request-id` metadata when it is a sane token,
//! generated (a random UUID) otherwise; the middleware puts it on the call's span, so every
//! log line of the call carries it, and returns it in the response metadata.

use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};

/// The metadata key, in requests and responses.
pub const HEADER: &str = "x-request-id";

/// [`HEADER`] as a header name, checked at compile time instead of on every insert.
pub fn header_name() -> HeaderName {
    const { HeaderName::from_static(HEADER) }
}
/// Longest id accepted from a caller; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The caller's id if it is 1 to 128 characters of `[A-Za-z0-9._:/+=-]` (nothing that
/// could forge a log line), else a new one.
pub fn from_headers(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(HEADER)
        .filter(|v| is_acceptable(v.as_bytes()))
        .cloned()
        .unwrap_or_else(generate)
}

fn is_acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"._:/+=-".contains(&b))
}

/// A random (version 4) UUID.
pub fn generate() -> HeaderValue {
    let mut id = [0; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
    HeaderValue::from_str(id).expect("hex digits and dashes are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_str(id).unwrap());
        h
    }

    #[test]
    fn a_sane_caller_id_is_kept() {
        assert_eq!(
            from_headers(&with("req-42.a:b/c+d=e_f")),
            "req-42.a:b/c+d=e_f"
        );
    }

    #[test]
    fn missing_or_odd_ids_are_replaced_by_a_uuid() {
        for headers in [
            HeaderMap::new(),
            with(""),
            with("a b"),
            with(&"x".repeat(129)),
        ] {
            let id = from_headers(&headers);
            let id = id.to_str().unwrap();
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(&id[14..15], "4", "{id}");
            assert!(is_acceptable(id.as_bytes()));
        }
        assert_ne!(generate(), generate());
    }
}
