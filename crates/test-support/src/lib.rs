//! Dev-only helpers for tests: a real nats-server on a random port, temp dirs, bounded waiting.
//!
//! A missing nats-server is a test failure with instructions, never a silent skip.

pub mod auth;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use lifecycle::nats_server::{NatsServerOptions, NatsServerProcess, find_binary};

/// A nats-server with JetStream in a temporary directory, on a port it picked itself.
pub struct TestNats {
    process: NatsServerProcess,
    dir: tempfile::TempDir,
}

impl TestNats {
    /// Starts the server; panics with an install hint if nats-server cannot be found.
    pub async fn start() -> TestNats {
        let binary = find_binary().unwrap_or_else(|error| panic!("{error}"));
        let dir = tempfile::Builder::new()
            .prefix("muster-nats-")
            .tempdir()
            .expect("temp dir for nats-server");
        let mut options = NatsServerOptions::new(binary, dir.path().to_path_buf());
        options.log_file = Some(dir.path().join("nats-server.log"));
        let process = NatsServerProcess::start(options)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        TestNats { process, dir }
    }

    pub fn url(&self) -> &str {
        self.process.url()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL the server and leave it down.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// SIGKILL the server and start it again on the same port with the same JetStream data.
    pub async fn crash_and_restart(&mut self) {
        self.process
            .restart()
            .await
            .unwrap_or_else(|error| panic!("restart nats-server: {error}"));
    }
}

/// A temporary directory for a sled database.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

/// Polls `check` until it returns `Some`, at most `timeout`; panics naming `what` otherwise.
/// Tests wait for conditions with this instead of sleeping.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// An HTTP/1.1 response as a test sees it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// POSTs `body` to `http://{addr}{path}` over a fresh connection (`Connection: close`) and reads
/// the whole answer: a plain HTTP/1.1 client over a real socket, enough for the feed endpoints.
/// Bodies with `Transfer-Encoding: chunked` are de-chunked.
pub async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The server may answer (413) and close before reading a large body: that is not an error.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    parse_http_response(&raw)
}

/// GETs `http://{addr}{path}` over a fresh connection (`Connection: close`) and reads the whole
/// answer, like [`http_post`]: enough for `/metrics` and `/healthz`.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers in the response"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| invalid("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| invalid("empty response"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| invalid("bad chunk"))?;
            let size_text =
                std::str::from_utf8(&rest[..line_end]).map_err(|_| invalid("bad chunk"))?;
            let size = usize::from_str_radix(size_text.trim(), 16)
                .map_err(|_| invalid("bad chunk size"))?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        body = out;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}
