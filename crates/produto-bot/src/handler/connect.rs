//! The balancing client's settings from the bot's configuration: the server's address
//! (`PRODUTO_SERVER`) and, for `https://`, the TLS files.

use tonic::{
    codegen::http::Uri,
    transport::{Certificate, ClientTlsConfig, Identity},
};

use crate::{BotConfig, StartupError};
use produto_client::client::ClientSettings;

/// The balancing client's settings for `PRODUTO_SERVER`: its `host:port`, resolved to
/// every address it has, and TLS checked against the host's name for `https://`. A bare
/// `host:port`, as every other client takes it, is plaintext (`http://host:port`).
pub(super) fn client_settings(config: &BotConfig) -> Result<ClientSettings, StartupError> {
    let invalid = |why: &str| StartupError(format!("PRODUTO_SERVER {:?}: {why}", config.server));
    let server = config.server.trim();
    let uri: Uri = if server.contains("://") {
        server.parse()
    } else {
        format!("http://{server}").parse()
    }
    .map_err(|e| invalid(&format!("{e}")))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid("expected http:// or https://")),
    };
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let mut settings = ClientSettings::new([format!("{host}:{port}")]);
    settings.connect_timeout = config.connect_timeout;
    if tls {
        let domain = host.trim_start_matches('[').trim_end_matches(']');
        settings.tls = Some(client_tls(config)?.domain_name(domain));
    }
    Ok(settings)
}

/// TLS settings for an `https://` server: the CA to trust (or the system's web roots) and,
/// for mutual TLS, the bot's own certificate.
fn client_tls(config: &BotConfig) -> Result<ClientTlsConfig, StartupError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| StartupError(format!("cannot read {}: {e}", path.display())))
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &config.tls_ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => tls.with_webpki_roots(),
    };
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_named_by_host_and_port_or_by_url() {
        for plain in [
            "127.0.0.1:50051",
            "http://127.0.0.1:50051",
            " produto:50051 ",
        ] {
            let settings = client_settings(&BotConfig::for_server(plain)).unwrap();
            assert!(settings.tls.is_none(), "{plain}");
        }
        let secure = client_settings(&BotConfig::for_server("https://produto:50051")).unwrap();
        assert!(secure.tls.is_some());
        assert!(client_settings(&BotConfig::for_server("not a url")).is_err());
        assert!(client_settings(&BotConfig::for_server("ftp://produto:50051")).is_err());
    }
}
