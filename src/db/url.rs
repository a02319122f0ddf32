//! libpq's connection strings in URL form, with several hosts ([`ConnString`]): hosts and
//! ports as libpq lists them (`postgres://u@h1:5432,h2:5433/db` or `?host=h1,h2&port=5432`),
//! `target_session_attrs` and `load_balance_hosts`. sqlx connects to one host and knows
//! neither attribute, so each host is handed to it as a URL of its own without them.

use std::fmt;

/// What a server must be for a connection to it to be kept (libpq's `target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionAttrs {
    /// Any server that accepts the connection.
    #[default]
    Any,
    /// Accepts writes: `SHOW transaction_read_only` is `off`.
    ReadWrite,
    /// Refuses writes: `SHOW transaction_read_only` is `on`.
    ReadOnly,
    /// Not in recovery: `pg_is_in_recovery()` is false.
    Primary,
    /// In recovery (a standby).
    Standby,
    /// A standby if one is up, else any server.
    PreferStandby,
}

impl SessionAttrs {
    const ALLOWED: &'static str = "any, read-write, read-only, primary, standby, prefer-standby";

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "any" => SessionAttrs::Any,
            "read-write" => SessionAttrs::ReadWrite,
            "read-only" => SessionAttrs::ReadOnly,
            "primary" => SessionAttrs::Primary,
            "standby" => SessionAttrs::Standby,
            "prefer-standby" => SessionAttrs::PreferStandby,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::ReadOnly => "read-only",
            SessionAttrs::Primary => "primary",
            SessionAttrs::Standby => "standby",
            SessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a server with these attributes may take writes.
    pub fn allows_writes(self) -> bool {
        matches!(
            self,
            SessionAttrs::Any | SessionAttrs::ReadWrite | SessionAttrs::Primary
        )
    }
}

/// How the hosts are ordered (libpq's `load_balance_hosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalance {
    /// In the order listed: the first suitable host is used.
    #[default]
    Disable,
    /// Spread over every suitable host.
    Random,
}

/// One host of a connection string. An empty `name` is sqlx's default host (`PGHOST`, a
/// local socket directory, or `localhost`); a name starting with `/` is a socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// `None`: the default port (`PGPORT` or 5432).
    pub port: Option<u16>,
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "(default host)"
        } else {
            &self.name
        };
        match self.port {
            Some(port) if self.name.contains(':') => write!(f, "[{name}]:{port}"),
            Some(port) => write!(f, "{name}:{port}"),
            None => f.write_str(name),
        }
    }
}

/// What is wrong with a connection string. Never shows a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a postgres:// or postgresql:// URL")]
    NotPostgres,
    #[error("host {index} of {count} is empty: list hosts as h1:port1,h2:port2")]
    EmptyHost { index: usize, count: usize },
    #[error("host {host}: the port {port:?} is not a number from 1 to 65535")]
    BadPort { host: String, port: String },
    #[error("host {host:?}: an IPv6 address in brackets is missing its closing ']'")]
    UnclosedBracket { host: String },
    #[error(
        "port= lists {ports} ports for {hosts} hosts: give one port for every host, or one per host"
    )]
    PortCount { ports: usize, hosts: usize },
    #[error(
        "the {what} are given twice, in the URL's host part and in {param}=: give them in one place"
    )]
    GivenTwice {
        what: &'static str,
        param: &'static str,
    },
    #[error("{param} is given more than once")]
    Repeated { param: &'static str },
    #[error("{param}={value:?} is not one of: {allowed}")]
    BadValue {
        param: &'static str,
        value: String,
        allowed: &'static str,
    },
}

/// A PostgreSQL connection string with its hosts taken apart. `Debug` shows no password.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnString {
    /// `postgres://` or `postgresql://`.
    scheme: &'static str,
    /// `user[:password]` as written (percent-encoded), or empty.
    userinfo: String,
    /// The host part as written, kept when it names one host and no `host=` replaces it
    /// (so that a URL with one host reaches sqlx as it was written).
    authority_host: Option<String>,
    /// `/database`, as written, or empty.
    path: String,
    /// The query's other parameters, as written (`k=v`), for sqlx.
    params: Vec<String>,
    pub hosts: Vec<Host>,
    pub target_session_attrs: SessionAttrs,
    pub load_balance_hosts: LoadBalance,
}

impl fmt::Debug for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnString")
            .field("hosts", &self.hosts)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("load_balance_hosts", &self.load_balance_hosts)
            .finish_non_exhaustive()
    }
}

impl ConnString {
    /// Parses a `postgres://` URL as libpq does, hosts and ports in the host part
    /// (`h1:p1,[::1]:p2,h3`) or in `host=`/`port=` (comma lists; one port applies to every
    /// host).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("postgres://") {
            ("postgres://", rest)
        } else if let Some(rest) = url.strip_prefix("postgresql://") {
            ("postgresql://", rest)
        } else {
            return Err(UrlError::NotPostgres);
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (userinfo, host_part) = authority.rsplit_once('@').unwrap_or(("", authority));

        let mut params = Vec::new();
        let (mut host_param, mut port_param, mut attrs, mut balance) = (None, None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "host" | "hostaddr" => &mut host_param,
                "port" => &mut port_param,
                "target_session_attrs" => &mut attrs,
                "load_balance_hosts" => &mut balance,
                _ => {
                    params.push(pair.to_owned());
                    continue;
                }
            };
            let param = match key {
                "host" | "hostaddr" => "host",
                "port" => "port",
                "target_session_attrs" => "target_session_attrs",
                _ => "load_balance_hosts",
            };
            if slot.replace(decode(value)).is_some() {
                return Err(UrlError::Repeated { param });
            }
        }

        let hosts = hosts_of(host_part, host_param.as_deref(), port_param.as_deref())?;
        let authority_host = (host_param.is_none() && port_param.is_none() && hosts.len() == 1)
            .then(|| host_part.to_owned());
        let target_session_attrs = match attrs {
            None => SessionAttrs::default(),
            Some(value) => SessionAttrs::parse(&value).ok_or(UrlError::BadValue {
                param: "target_session_attrs",
                value,
                allowed: SessionAttrs::ALLOWED,
            })?,
        };
        let load_balance_hosts = match balance.as_deref() {
            None | Some("disable") => LoadBalance::Disable,
            Some("random") => LoadBalance::Random,
            Some(value) => {
                return Err(UrlError::BadValue {
                    param: "load_balance_hosts",
                    value: value.to_owned(),
                    allowed: "disable, random",
                });
            }
        };
        Ok(ConnString {
            scheme,
            userinfo: userinfo.to_owned(),
            authority_host,
            path: path.to_owned(),
            params,
            hosts,
            target_session_attrs,
            load_balance_hosts,
        })
    }

    /// The URL of host `index` alone, without the attributes sqlx does not know.
    pub fn host_url(&self, index: usize) -> String {
        let host = &self.hosts[index];
        let mut params = self.params.clone();
        let host_part = if let Some(written) = &self.authority_host {
            written.clone()
        } else if host.name.is_empty() || host.name.starts_with('/') {
            // A socket directory or the default host cannot be written in the host part, and
            // an empty host part after a user is no URL: `host=` overrides a placeholder.
            if !host.name.is_empty() {
                params.push(format!("host={}", encode(&host.name)));
            }
            if let Some(port) = host.port {
                params.push(format!("port={port}"));
            }
            if self.userinfo.is_empty() {
                String::new()
            } else {
                "localhost".to_owned()
            }
        } else {
            let name = if host.name.contains(':') {
                format!("[{}]", host.name)
            } else {
                host.name.clone()
            };
            match host.port {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        };
        let at = if self.userinfo.is_empty() { "" } else { "@" };
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        format!(
            "{}{}{at}{host_part}{}{query}",
            self.scheme, self.userinfo, self.path
        )
    }
}

/// The hosts of a URL: from its host part, or from `host=` (with `port=` in either case).
fn hosts_of(
    host_part: &str,
    host_param: Option<&str>,
    port_param: Option<&str>,
) -> Result<Vec<Host>, UrlError> {
    let mut hosts = match host_param {
        Some(_) if !host_part.is_empty() => {
            return Err(UrlError::GivenTwice {
                what: "hosts",
                param: "host",
            });
        }
        Some(list) => split_list(list)?
            .into_iter()
            .map(|name| Host {
                name: name.to_owned(),
                port: None,
            })
            .collect(),
        None if host_part.is_empty() => vec![Host {
            name: String::new(),
            port: None,
        }],
        None => {
            let specs = split_list(host_part)?;
            specs
                .into_iter()
                .map(host_spec)
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    let Some(list) = port_param else {
        return Ok(hosts);
    };
    if hosts.iter().any(|h| h.port.is_some()) {
        return Err(UrlError::GivenTwice {
            what: "ports",
            param: "port",
        });
    }
    let ports: Vec<&str> = list.split(',').collect();
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(UrlError::PortCount {
            ports: ports.len(),
            hosts: hosts.len(),
        });
    }
    let count = hosts.len();
    for (index, host) in hosts.iter_mut().enumerate() {
        let port = ports[if ports.len() == 1 { 0 } else { index }];
        host.port = Some(parse_port(&host.name, port, index, count)?);
    }
    Ok(hosts)
}

/// A comma list of hosts, none of them empty.
fn split_list(list: &str) -> Result<Vec<&str>, UrlError> {
    let items: Vec<&str> = list.split(',').collect();
    match items.iter().position(|item| item.is_empty()) {
        Some(at) if items.len() > 1 || list.is_empty() => Err(UrlError::EmptyHost {
            index: at + 1,
            count: items.len(),
        }),
        _ => Ok(items),
    }
}

/// One `host[:port]` of a URL's host part; an IPv6 address is in brackets.
fn host_spec(spec: &str) -> Result<Host, UrlError> {
    let (name, port) = if let Some(inner) = spec.strip_prefix('[') {
        let Some((address, after)) = inner.split_once(']') else {
            return Err(UrlError::UnclosedBracket {
                host: spec.to_owned(),
            });
        };
        match after.strip_prefix(':') {
            Some(port) => (address.to_owned(), Some(port)),
            None if after.is_empty() => (address.to_owned(), None),
            None => {
                return Err(UrlError::BadPort {
                    host: format!("[{address}]"),
                    port: after.to_owned(),
                });
            }
        }
    } else {
        match spec.rsplit_once(':') {
            Some((name, port)) => (decode(name), Some(port)),
            None => (decode(spec), None),
        }
    };
    let port = match port {
        None => None,
        Some(port) => Some(parse_port(&name, port, 0, 1)?),
    };
    Ok(Host { name, port })
}

fn parse_port(host: &str, port: &str, index: usize, count: usize) -> Result<u16, UrlError> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => {
            let host = match (host.is_empty(), count) {
                (true, 1) => "(default host)".to_owned(),
                (true, _) => format!("{} of {count}", index + 1),
                (false, _) => host.to_owned(),
            };
            Err(UrlError::BadPort {
                host,
                port: port.to_owned(),
            })
        }
    }
}

fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A list of URLs split at every comma (as `PRODUTO_REPLICA_URLS` arrives from clap, or a
/// file split at commas and newlines) put back together: a piece that does not start with
/// a scheme continues the URL before it (`postgres://h1,h2/db` is one URL of two hosts).
pub fn regroup(pieces: &[String]) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in pieces.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let starts_url = piece.starts_with("sqlite:")
            || piece.split_once("://").is_some_and(|(scheme, _)| {
                !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            });
        match urls.last_mut() {
            Some(last) if !starts_url => {
                last.push(',');
                last.push_str(piece);
            }
            _ => urls.push(piece.to_owned()),
        }
    }
    urls
}

/// A multi-host URL with its password (in the user part or `password=`) replaced by `***`.
pub fn redacted(url: &str) -> Option<String> {
    let parsed = ConnString::parse(url).ok()?;
    let userinfo = match parsed.userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => parsed.userinfo.clone(),
    };
    let params: Vec<String> = parsed
        .params
        .iter()
        .map(|p| {
            if p.starts_with("password=") {
                "password=***".to_owned()
            } else {
                p.clone()
            }
        })
        .collect();
    let hosts: Vec<String> = parsed.hosts.iter().map(Host::to_string).collect();
    let at = if userinfo.is_empty() { "" } else { "@" };
    let query = if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    };
    Some(format!(
        "{}{userinfo}{at}{}{}{query}",
        parsed.scheme,
        hosts.join(","),
        parsed.path
    ))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::PgConnectOptions;

    use super::*;

    fn host(name: &str, port: Option<u16>) -> Host {
        Host {
            name: name.into(),
            port,
        }
    }

    /// What sqlx makes of host `index`'s URL: host, port, database, user, password.
    fn sqlx_sees(url: &str, index: usize) -> (String, u16, String, String) {
        let parsed = ConnString::parse(url).unwrap();
        let options = PgConnectOptions::from_str(&parsed.host_url(index)).unwrap();
        (
            options.get_host().to_owned(),
            options.get_port(),
            options.get_database().unwrap_or("").to_owned(),
            options.get_username().to_owned(),
        )
    }

    #[test]
    fn a_single_host_url_reaches_sqlx_as_written_without_the_attributes() {
        let url = "postgres://produto:pw@db:5433/produto?sslmode=disable&target_session_attrs=read-write&application_name=x";
        let parsed = ConnString::parse(url).unwrap();
        assert_eq!(parsed.hosts, [host("db", Some(5433))]);
        assert_eq!(parsed.target_session_attrs, SessionAttrs::ReadWrite);
        assert_eq!(parsed.load_balance_hosts, LoadBalance::Disable);
        assert_eq!(
            parsed.host_url(0),
            "postgres://produto:pw@db:5433/produto?sslmode=disable&application_name=x"
        );
        // No host, no port, no query: unchanged.
        for url in ["postgresql:///produto", "postgres://u@/d", "postgres://h"] {
            let parsed = ConnString::parse(url).unwrap();
            assert_eq!(parsed.host_url(0), url);
            assert_eq!(parsed.target_session_attrs, SessionAttrs::Any);
        }
    }

    #[test]
    fn hosts_in_the_host_part_become_one_url_each() {
        let url = "postgres://u:p%40ss@h1:5432,h2:5433,h3/db?target_session_attrs=primary&load_balance_hosts=random&sslmode=prefer";
        let parsed = ConnString::parse(url).unwrap();
        assert_eq!(
            parsed.hosts,
            [
                host("h1", Some(5432)),
                host("h2", Some(5433)),
                host("h3", None)
            ]
        );
        assert_eq!(parsed.target_session_attrs, SessionAttrs::Primary);
        assert_eq!(parsed.load_balance_hosts, LoadBalance::Random);
        assert_eq!(
            parsed.host_url(1),
            "postgres://u:p%40ss@h2:5433/db?sslmode=prefer"
        );
        assert_eq!(
            sqlx_sees(url, 0),
            ("h1".into(), 5432, "db".into(), "u".into())
        );
        assert_eq!(
            sqlx_sees(url, 2),
            ("h3".into(), 5432, "db".into(), "u".into())
        );
        let options =
            PgConnectOptions::from_str(&ConnString::parse(url).unwrap().host_url(1)).unwrap();
        assert_eq!(options.get_port(), 5433);
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        let url = "postgresql://[::1]:5433,[fe80::2],h:1/db";
        let parsed = ConnString::parse(url).unwrap();
        assert_eq!(
            parsed.hosts,
            [
                host("::1", Some(5433)),
                host("fe80::2", None),
                host("h", Some(1))
            ]
        );
        assert_eq!(parsed.host_url(0), "postgresql://[::1]:5433/db");
        assert_eq!(parsed.host_url(1), "postgresql://[fe80::2]/db");
        assert_eq!(parsed.hosts[0].to_string(), "[::1]:5433");
    }

    #[test]
    fn host_and_port_parameters_list_hosts_as_libpq_does() {
        // One port applies to every host.
        let url = "postgres://u@/db?host=h1,h2&port=6432&target_session_attrs=standby";
        let parsed = ConnString::parse(url).unwrap();
        assert_eq!(
            parsed.hosts,
            [host("h1", Some(6432)), host("h2", Some(6432))]
        );
        assert_eq!(parsed.target_session_attrs, SessionAttrs::Standby);
        assert_eq!(parsed.host_url(1), "postgres://u@h2:6432/db");
        assert_eq!(
            sqlx_sees(url, 1),
            ("h2".into(), 6432, "db".into(), "u".into())
        );
        // One port per host.
        let parsed = ConnString::parse("postgres:///db?host=a,b,c&port=1,2,3").unwrap();
        let ports: Vec<_> = parsed.hosts.iter().map(|h| h.port).collect();
        assert_eq!(ports, [Some(1), Some(2), Some(3)]);
        // A port list over the host part's hosts.
        let parsed = ConnString::parse("postgres://a,b/db?port=7,8").unwrap();
        assert_eq!(parsed.hosts, [host("a", Some(7)), host("b", Some(8))]);
        // A socket directory, percent-encoded in host=.
        let url = "postgres://u@/db?host=%2Fvar%2Frun%2Fpostgresql,h2&port=5432";
        let parsed = ConnString::parse(url).unwrap();
        assert_eq!(parsed.hosts[0].name, "/var/run/postgresql");
        assert_eq!(
            parsed.host_url(0),
            "postgres://u@localhost/db?host=%2Fvar%2Frun%2Fpostgresql&port=5432"
        );
        let options = PgConnectOptions::from_str(&parsed.host_url(0)).unwrap();
        assert_eq!(
            options.get_socket().unwrap().to_str(),
            Some("/var/run/postgresql")
        );
        // hostaddr= is read as host= (sqlx does the same).
        let parsed = ConnString::parse("postgres:///db?hostaddr=10.0.0.1,10.0.0.2").unwrap();
        assert_eq!(parsed.hosts.len(), 2);
        // Every attribute value libpq knows.
        for value in SessionAttrs::ALLOWED.split(", ") {
            let parsed =
                ConnString::parse(&format!("postgres://h/db?target_session_attrs={value}"))
                    .unwrap();
            assert_eq!(parsed.target_session_attrs.as_str(), value);
        }
        let parsed = ConnString::parse("postgres://h/db?load_balance_hosts=disable").unwrap();
        assert_eq!(parsed.load_balance_hosts, LoadBalance::Disable);
    }

    #[test]
    fn every_mistake_is_named() {
        let err = |url: &str| ConnString::parse(url).unwrap_err().to_string();
        assert_eq!(
            err("mysql://h/db"),
            "not a postgres:// or postgresql:// URL"
        );
        assert_eq!(
            err("postgres://u:secret@h1:5432,h2:54x2/db"),
            "host h2: the port \"54x2\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("postgres://h1:0/db"),
            "host h1: the port \"0\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("postgres://h1:70000/db"),
            "host h1: the port \"70000\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("postgres://h1,,h3/db"),
            "host 2 of 3 is empty: list hosts as h1:port1,h2:port2"
        );
        assert_eq!(
            err("postgres:///db?host=a,"),
            "host 2 of 2 is empty: list hosts as h1:port1,h2:port2"
        );
        assert_eq!(
            err("postgres://[::1:5432/db"),
            "host \"[::1:5432\": an IPv6 address in brackets is missing its closing ']'"
        );
        assert_eq!(
            err("postgres://[::1]x/db"),
            "host [::1]: the port \"x\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("postgres:///db?host=a,b,c&port=1,2"),
            "port= lists 2 ports for 3 hosts: give one port for every host, or one per host"
        );
        assert_eq!(
            err("postgres:///db?host=a,b&port=1,x"),
            "host b: the port \"x\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("postgres:///db?port=x"),
            "host (default host): the port \"x\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("postgres://h/db?host=a"),
            "the hosts are given twice, in the URL's host part and in host=: give them in one place"
        );
        assert_eq!(
            err("postgres://h:1/db?port=2"),
            "the ports are given twice, in the URL's host part and in port=: give them in one place"
        );
        assert_eq!(
            err("postgres://h/db?target_session_attrs=any&target_session_attrs=primary"),
            "target_session_attrs is given more than once"
        );
        assert_eq!(
            err("postgres://h/db?target_session_attrs=master"),
            "target_session_attrs=\"master\" is not one of: any, read-write, read-only, \
             primary, standby, prefer-standby"
        );
        assert_eq!(
            err("postgres://h/db?load_balance_hosts=round-robin"),
            "load_balance_hosts=\"round-robin\" is not one of: disable, random"
        );
        assert!(!err("postgres://u:secret@h:x/db").contains("secret"));
    }

    #[test]
    fn lists_split_at_every_comma_are_put_back_together() {
        let pieces: Vec<String> =
            "postgres://a:1,b:2/db?host_attr=x, postgres://c/db,postgresql:///db?host=d,e&port=1"
                .split(',')
                .map(str::to_owned)
                .collect();
        assert_eq!(
            regroup(&pieces),
            [
                "postgres://a:1,b:2/db?host_attr=x",
                "postgres://c/db",
                "postgresql:///db?host=d,e&port=1"
            ]
        );
        let pieces: Vec<String> = ["postgres://a,b/db?sslcrl=x://y", "mysql://c/d"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(regroup(&pieces), pieces, "a scheme starts a URL");
        let pieces = ["b:2/db".to_owned()];
        assert_eq!(
            regroup(&pieces),
            ["b:2/db"],
            "a stray piece is kept, to be refused"
        );
    }

    #[test]
    fn a_redacted_multi_host_url_shows_no_password() {
        assert_eq!(
            redacted("postgres://u:s3cret@h1:1,h2:2/db?password=s3cret&sslmode=require").unwrap(),
            "postgres://u:***@h1:1,h2:2/db?password=***&sslmode=require"
        );
        assert_eq!(redacted("nope"), None);
    }
}
