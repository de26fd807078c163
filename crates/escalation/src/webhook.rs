//! A minimal HTTP/1.1 client for the notifier's webhook: one `POST` of a JSON body per
//! connection (`Connection: close`), answered by the status line. Plain `http://` only; an
//! `https://` endpoint needs a TLS-terminating relay in front of it for now.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of the answer read while looking for the status line.
const STATUS_LINE_BYTES_MAX: usize = 8 * 1024;

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// As given, for the `Host` header and the connect: `host`, `1.2.3.4` or `[::1]`.
    pub host: String,
    pub port: u16,
    /// `/` when none was given; includes the query.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                format!("{url}: https is not supported yet; put a TLS-terminating relay in front")
            } else {
                format!("{url}: not an http:// URL")
            }
        })?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(index) if rest.as_bytes()[index] == b'/' => (&rest[..index], &rest[index..]),
            Some(index) => (&rest[..index], &rest[index..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url}: no host, or credentials in the URL"));
        }
        let (host, port) = if let Some(end) = authority.strip_prefix('[').and(authority.find(']')) {
            let host = &authority[..=end];
            match &authority[end + 1..] {
                "" => (host, 80),
                port => (
                    host,
                    parse_port(url, port.strip_prefix(':').unwrap_or("x"))?,
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, parse_port(url, port)?),
                None => (authority, 80),
            }
        };
        if host.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{url}: not a valid http URL"));
        }
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path,
        })
    }

    fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

fn parse_port(url: &str, port: &str) -> Result<u16, String> {
    port.parse()
        .map_err(|_| format!("{url}: {port:?} is not a port"))
}

/// POSTs `body` as `application/json` and returns the answer's status code, all within `timeout`.
pub async fn post_json(url: &HttpUrl, body: &[u8], timeout: Duration) -> Result<u16, String> {
    match tokio::time::timeout(timeout, post_json_inner(url, body)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn post_json_inner(url: &HttpUrl, body: &[u8]) -> Result<u16, String> {
    let mut stream = TcpStream::connect((url.connect_host(), url.port))
        .await
        .map_err(|error| format!("connect {}:{}: {error}", url.host, url.port))?;
    let host = if url.port == 80 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: muster-notifier\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        path = url.path,
        length = body.len(),
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .await
        .map_err(|error| format!("send: {error}"))?;
    let mut answer = Vec::with_capacity(256);
    let mut buffer = [0u8; 1024];
    loop {
        if let Some(end) = answer.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&answer[..end]);
        }
        if answer.len() > STATUS_LINE_BYTES_MAX {
            return Err("the answer has no status line".into());
        }
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| format!("receive: {error}"))?;
        if read == 0 {
            return Err("connection closed before a status line".into());
        }
        answer.extend_from_slice(&buffer[..read]);
    }
}

fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!("not an HTTP/1 status line: {line:?}"));
    }
    code.parse()
        .map_err(|_| format!("not an HTTP/1 status line: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_host_port_and_path() {
        let url = HttpUrl::parse("http://127.0.0.1:8080/hooks/muster?x=1").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 8080, "/hooks/muster?x=1")
        );
        let url = HttpUrl::parse("http://relay.local").unwrap();
        assert_eq!((url.port, url.path.as_str()), (80, "/"));
        let url = HttpUrl::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((url.connect_host(), url.port), ("::1", 9000));
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://u:p@x/",
            "http://x:port/",
            "http://x/a b",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content"), Ok(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500"), Ok(500));
        assert!(parse_status_line(b"SSH-2.0").is_err());
    }
}
