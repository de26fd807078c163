//! A minimal HTTP/1.1 keep-alive client for the feed listener: one connection, one request at a
//! time, `Content-Length` or chunked answers. Enough for `POST /v1/feeds/<format>`; not general.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `http://host:port` split into what we connect to and what goes in `Host:`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub authority: String,
    /// The `Authorization` header value sent with every request, if any.
    pub authorization: Option<String>,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("{url}: only http:// feed URLs are supported"))?;
        let authority = rest.trim_end_matches('/').split('/').next().unwrap_or("");
        if authority.is_empty() {
            bail!("{url}: no host:port");
        }
        Ok(Endpoint {
            authority: authority.to_string(),
            authorization: None,
        })
    }

    pub fn with_authorization(mut self, value: String) -> Endpoint {
        self.authorization = Some(value);
        self
    }
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One keep-alive connection; reconnects after the server closes it.
pub struct Client {
    endpoint: Endpoint,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// POSTs `body` to `path` and reads the whole answer. A request on a connection the server
    /// had already closed is retried once on a new one (nothing of it was read).
    pub async fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Result<Response> {
        let reused = self.stream.is_some();
        match self.try_post(path, content_type, body).await {
            Ok(response) => Ok(response),
            Err(_) if reused => {
                self.stream = None;
                self.try_post(path, content_type, body).await
            }
            Err(e) => Err(e),
        }
    }

    async fn try_post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Result<Response> {
        if self.stream.is_none() {
            let stream = tokio::time::timeout(
                Duration::from_secs(5),
                TcpStream::connect(&self.endpoint.authority),
            )
            .await
            .context("connect timed out")??;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected");
        let authorization = self
            .endpoint
            .authorization
            .as_deref()
            .map(|value| format!("Authorization: {value}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.endpoint.authority,
            body.len()
        );
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
        if let Err(e) = stream.write_all(&request).await {
            self.stream = None;
            return Err(e.into());
        }
        match read_response(stream, &mut self.buf).await {
            Ok((response, keep_alive)) => {
                if !keep_alive {
                    self.stream = None;
                }
                Ok(response)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// Reads one response; `buf` keeps bytes past it (there are none without pipelining).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(Response, bool)> {
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos + 4;
        }
        fill(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("non-UTF-8 response head")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    buf.drain(..head_end);
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(pos) = find(buf, b"\r\n") {
                    break pos;
                }
                fill(stream, buf).await?;
            };
            let size_text = std::str::from_utf8(&buf[..line_end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(stream, buf).await?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break body;
            }
        }
    } else if let Some(length) = content_length {
        while buf.len() < length {
            fill(stream, buf).await?;
        }
        buf.drain(..length).collect()
    } else {
        // No length: the body runs to the end of the connection.
        loop {
            if stream.read_buf(buf).await? == 0 {
                break;
            }
        }
        keep_alive = false;
        std::mem::take(buf)
    };
    Ok((Response { status, body }, keep_alive))
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    buf.reserve(8 * 1024);
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_buf(buf))
        .await
        .context("no answer within 30 s")??;
    if read == 0 {
        bail!("connection closed mid-response");
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
