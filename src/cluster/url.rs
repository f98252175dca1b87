//! The `--redis` URL: `redis://[user:password@]host[:port][/db]`, parsed into its parts.
//!
//! Owns the syntax and its errors only. It must not resolve the host or open anything: the server does that. TLS
//! (`rediss://`) is refused with an error that says so, since the link speaks plain TCP.

use std::fmt;
use std::str::FromStr;

/// The port Redis listens on unless the URL says otherwise.
pub const DEFAULT_PORT: u16 = 6379;

/// Where Redis is and how to log in to it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: u32,
}

impl RedisUrl {
    /// The host name or IP address (an IPv6 address without its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The ACL user to log in as, if the URL names one (Redis 6 `AUTH user password`).
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password to log in with, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The database to `SELECT` (0 unless the path names another).
    pub fn db(&self) -> u32 {
        self.db
    }
}

/// Why a `--redis` URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// `rediss://`: the link speaks plain TCP only.
    TlsNotSupported,
    /// No `scheme://` at all (`127.0.0.1:6379`).
    MissingScheme,
    /// A scheme other than `redis://`, such as `unix://` or `http://`.
    UnsupportedScheme(String),
    /// Nothing between `redis://` and the port or path.
    MissingHost,
    /// An IPv6 address with an opening bracket and no closing one.
    UnclosedBracket,
    /// The port is not a number from 1 to 65535.
    BadPort(String),
    /// The path is not `/` followed by a database number.
    BadDatabase(String),
    /// A `%` not followed by two hexadecimal digits, or an escape that does not decode to UTF-8.
    BadEscape,
    /// A user name with no password: Redis `AUTH` needs both.
    UserWithoutPassword,
    /// `?options` or `#fragment`, which this parser does not understand.
    UnsupportedOptions,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::TlsNotSupported => f.write_str(
                "rediss:// (TLS) is not supported: use redis:// on a trusted network, or a local TLS tunnel \
                 such as stunnel",
            ),
            UrlError::MissingScheme => f.write_str(
                "no scheme: expected redis://[user:password@]host[:port][/db]",
            ),
            UrlError::UnsupportedScheme(scheme) => write!(
                f,
                "unsupported scheme `{scheme}://`: expected redis://[user:password@]host[:port][/db]"
            ),
            UrlError::MissingHost => f.write_str("no host after redis://"),
            UrlError::UnclosedBracket => f.write_str("an IPv6 host needs its closing `]`"),
            UrlError::BadPort(port) => write!(f, "`{port}` is not a port from 1 to 65535"),
            UrlError::BadDatabase(path) => {
                write!(f, "`{path}` is not a database number (expected /0, /1, ...)")
            }
            UrlError::BadEscape => {
                f.write_str("a % in the user name or password must be followed by two hex digits")
            }
            UrlError::UserWithoutPassword => {
                f.write_str("a user name needs a password: redis://user:password@host")
            }
            UrlError::UnsupportedOptions => {
                f.write_str("?options and #fragments are not supported: put the database in the path (/db)")
            }
        }
    }
}

impl std::error::Error for UrlError {}

impl FromStr for RedisUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<RedisUrl, UrlError> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(UrlError::MissingScheme);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "redis" => {}
            "rediss" => return Err(UrlError::TlsNotSupported),
            _ => return Err(UrlError::UnsupportedScheme(scheme.to_owned())),
        }
        // The last `@` ends the user information, so a password may hold an unescaped `@`, `/`, `?` or `#`.
        let (userinfo, location) = match rest.rsplit_once('@') {
            Some((userinfo, location)) => (Some(userinfo), location),
            None => (None, rest),
        };
        if location.contains(['?', '#']) {
            return Err(UrlError::UnsupportedOptions);
        }
        let (authority, path) = match location.find('/') {
            Some(slash) => location.split_at(slash),
            None => (location, ""),
        };
        let (host, port) = split_host_port(authority)?;
        let (username, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => split_userinfo(userinfo)?,
        };
        Ok(RedisUrl {
            host,
            port,
            username,
            password,
            db: parse_db(path)?,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(UrlError::UnclosedBracket)?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(UrlError::BadPort(after.to_owned())),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| UrlError::BadPort(port.to_owned()))?,
    };
    Ok((host.to_owned(), port))
}

/// `user:password`, `:password` or `password`-less `user` (refused), each part percent-decoded.
fn split_userinfo(userinfo: &str) -> Result<(Option<String>, Option<String>), UrlError> {
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let user = percent_decode(user)?;
    let password = password.map(percent_decode).transpose()?;
    match (user.is_empty(), password) {
        (true, None) => Ok((None, None)),
        (false, None) => Err(UrlError::UserWithoutPassword),
        (true, Some(password)) => Ok((None, Some(password))),
        (false, Some(password)) => Ok((Some(user), Some(password))),
    }
}

/// `` or `/` is database 0; `/N` is database N.
fn parse_db(path: &str) -> Result<u32, UrlError> {
    match path.strip_prefix('/') {
        None | Some("") => Ok(0),
        Some(number) => number
            .parse()
            .map_err(|_| UrlError::BadDatabase(path.to_owned())),
    }
}

/// RFC 3986 2.1: `%XX` is the byte XX; everything else stands for itself.
fn percent_decode(text: &str) -> Result<String, UrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let high = bytes.get(i + 1).and_then(|b| hex_value(*b));
            let low = bytes.get(i + 2).and_then(|b| hex_value(*b));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(UrlError::BadEscape);
            };
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::BadEscape)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The URL with its password hidden, safe for logs.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            _ => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

/// Like `Display`: the password never reaches a log or a `{:?}` of the configuration.
impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RedisUrl {
        text.parse()
            .unwrap_or_else(|e| panic!("{text} did not parse: {e}"))
    }

    #[test]
    fn a_bare_host_gets_the_default_port_and_database_zero() {
        let url = parse("redis://cache.internal");
        assert_eq!(url.host(), "cache.internal");
        assert_eq!(url.port(), DEFAULT_PORT);
        assert_eq!(url.db(), 0);
        assert_eq!((url.username(), url.password()), (None, None));
    }

    #[test]
    fn port_and_database_are_read_from_the_url() {
        let url = parse("redis://127.0.0.1:6380/3");
        assert_eq!((url.host(), url.port(), url.db()), ("127.0.0.1", 6380, 3));
        assert_eq!(parse("redis://h:1/").db(), 0);
    }

    #[test]
    fn user_and_password_are_percent_decoded() {
        let url = parse("redis://chat:p%40ss%3Aword@h");
        assert_eq!(url.username(), Some("chat"));
        assert_eq!(url.password(), Some("p@ss:word"));
    }

    #[test]
    fn a_password_alone_has_no_user() {
        let url = parse("redis://:secret@h:7000");
        assert_eq!((url.username(), url.password()), (None, Some("secret")));
        assert_eq!(url.port(), 7000);
    }

    #[test]
    fn the_last_at_sign_ends_the_password() {
        let url = parse("redis://u:a@b/c@h/2");
        assert_eq!(url.password(), Some("a@b/c"));
        assert_eq!((url.host(), url.db()), ("h", 2));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let url = parse("redis://[::1]:6390/1");
        assert_eq!((url.host(), url.port(), url.db()), ("::1", 6390, 1));
        assert_eq!(parse("redis://[::1]").port(), DEFAULT_PORT);
        assert_eq!(parse("redis://[::1]").to_string(), "redis://[::1]:6379/0");
    }

    #[test]
    fn tls_is_refused_with_an_error_that_says_so() {
        let error = "rediss://h:6380".parse::<RedisUrl>().unwrap_err();
        assert_eq!(error, UrlError::TlsNotSupported);
        assert!(error.to_string().contains("TLS"), "{error}");
    }

    #[test]
    fn malformed_urls_are_refused_with_their_reason() {
        let cases: [(&str, UrlError); 11] = [
            ("h:6379", UrlError::MissingScheme),
            (
                "unix:///tmp/r.sock",
                UrlError::UnsupportedScheme("unix".into()),
            ),
            ("redis://", UrlError::MissingHost),
            ("redis://:6379", UrlError::MissingHost),
            ("redis://h:0", UrlError::BadPort("0".into())),
            ("redis://h:65536", UrlError::BadPort("65536".into())),
            ("redis://[::1", UrlError::UnclosedBracket),
            ("redis://h/db", UrlError::BadDatabase("/db".into())),
            ("redis://u:%zz@h", UrlError::BadEscape),
            ("redis://user@h", UrlError::UserWithoutPassword),
            ("redis://h/0?protocol=resp3", UrlError::UnsupportedOptions),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<RedisUrl>(), Err(expected), "{text}");
        }
    }

    #[test]
    fn display_and_debug_hide_the_password() {
        let url = parse("redis://chat:hunter2@h:1/2");
        assert_eq!(url.to_string(), "redis://chat:***@h:1/2");
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
