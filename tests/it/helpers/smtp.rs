//! An SMTP sink for the email tests: a real ESMTP server on loopback that
//! speaks what lettre's client sends (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT,
//! DATA, RSET, NOOP, QUIT), records every message and login, and can be told
//! to refuse connections (421) or reject recipients (550). `Message` parses
//! the recorded MIME text just enough for assertions: top-level headers
//! (RFC 2047 decoded on request) and the decoded text/plain and text/html parts.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// How long `wait_for` waits before failing a test.
const PATIENCE: Duration = Duration::from_secs(30);

/// Standard base64 that accepts missing padding (encoded words often omit it).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const EHLO_REPLY: &str = "250-127.0.0.1 fulfilld test sink\r\n250-8BITMIME\r\n\
    250-SIZE 10485760\r\n250-AUTH PLAIN LOGIN\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES";

/// One message accepted by the sink: the envelope and the DATA content.
#[derive(Debug, Clone)]
pub struct Message {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The DATA content with dot-stuffing undone, lines joined by CRLF.
    pub raw: String,
}

#[derive(Default)]
struct State {
    messages: Mutex<Vec<Message>>,
    logins: Mutex<Vec<(String, String)>>,
    connections: AtomicUsize,
    down: AtomicBool,
    refuse: AtomicUsize,
    reject_rcpt: Mutex<Option<String>>,
}

/// The server; it stops (with every open connection) when dropped.
pub struct SmtpSink {
    port: u16,
    state: Arc<State>,
    stop: CancellationToken,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        SmtpSink { port, state, stop }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT?tls=none`
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// `smtp://USER:PASS@127.0.0.1:PORT?tls=none`, user and password percent-encoded.
    pub fn url_with_auth(&self, user: &str, pass: &str) -> String {
        format!(
            "smtp://{}:{}@127.0.0.1:{}?tls=none",
            percent_encode(user),
            percent_encode(pass),
            self.port
        )
    }

    pub fn messages(&self) -> Vec<Message> {
        self.state.messages.lock().unwrap().clone()
    }

    /// Every (username, password) pair a client authenticated with, in order.
    pub fn logins(&self) -> Vec<(String, String)> {
        self.state.logins.lock().unwrap().clone()
    }

    /// Accepted TCP connections so far, refused ones included.
    pub fn connections(&self) -> usize {
        self.state.connections.load(SeqCst)
    }

    /// Polls until at least `n` messages arrived and returns them all;
    /// fails the test after 30 s.
    pub async fn wait_for(&self, n: usize) -> Vec<Message> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for {n} email(s) at the SMTP sink: \
                 got {} over {} connection(s), subjects {:?}",
                got.len(),
                self.connections(),
                got.iter().map(Message::subject).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// While down, every connection is answered `421 4.3.2` and closed.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, SeqCst);
    }

    /// Treats the next `n` connections as down, then is up again.
    pub fn refuse_next(&self, n: usize) {
        self.state.refuse.store(n, SeqCst);
    }

    /// Answers `550 5.1.1` to every `RCPT TO` whose address contains the
    /// substring; `None` accepts every recipient again.
    pub fn reject_rcpt(&self, addr_substring: Option<String>) {
        *self.state.reject_rcpt.lock().unwrap() = addr_substring;
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        state.connections.fetch_add(1, SeqCst);
        let refused = state.down.load(SeqCst)
            || state
                .refuse
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok();
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = async {
                    if refused {
                        refuse(stream).await;
                    } else {
                        // A client hanging up mid-conversation is not the sink's problem.
                        let _ = serve(stream, &state).await;
                    }
                } => {}
            }
        });
    }
}

/// Answers 421 and closes gracefully: half-close, then drain until the client
/// hangs up, so it reads the reply rather than a reset.
async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"421 4.3.2 service not available\r\n")
        .await;
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 512];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn serve(stream: TcpStream, state: &State) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, mut w) = stream.into_split();
    let mut r = BufReader::new(read);
    reply(&mut w, "220 127.0.0.1 ESMTP fulfilld test sink").await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    while let Some(line) = read_line(&mut r).await? {
        let line = String::from_utf8_lossy(&line).into_owned();
        let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
        let arg = arg.trim();
        let answer: String = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => EHLO_REPLY.into(),
            "HELO" => "250 127.0.0.1".into(),
            "AUTH" => auth(arg, &mut r, &mut w, state).await?.into(),
            "MAIL" => match envelope_address(arg, "FROM:") {
                Some(address) => {
                    from = Some(address);
                    to.clear();
                    "250 2.1.0 OK".into()
                }
                None => "501 5.5.4 syntax: MAIL FROM:<address>".into(),
            },
            "RCPT" => match (&from, envelope_address(arg, "TO:")) {
                (None, _) => "503 5.5.1 MAIL first".into(),
                (_, None) => "501 5.5.4 syntax: RCPT TO:<address>".into(),
                (_, Some(address)) => {
                    let reject = state.reject_rcpt.lock().unwrap().clone();
                    if reject.is_some_and(|s| address.contains(&s)) {
                        "550 5.1.1 no such user".into()
                    } else {
                        to.push(address);
                        "250 2.1.5 OK".into()
                    }
                }
            },
            "DATA" if from.is_none() || to.is_empty() => "503 5.5.1 RCPT first".into(),
            "DATA" => {
                reply(&mut w, "354 end data with <CR><LF>.<CR><LF>").await?;
                let Some(raw) = read_data(&mut r).await? else {
                    return Ok(());
                };
                state.messages.lock().unwrap().push(Message {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    raw,
                });
                "250 2.0.0 OK: queued".into()
            }
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK".into()
            }
            "NOOP" => "250 2.0.0 OK".into(),
            "QUIT" => return reply(&mut w, "221 2.0.0 bye").await,
            _ => "502 5.5.2 command not recognized".into(),
        };
        reply(&mut w, &answer).await?;
    }
    Ok(())
}

/// AUTH PLAIN (initial response or after 334) and AUTH LOGIN; every login is
/// accepted and recorded.
async fn auth(
    arg: &str,
    r: &mut (impl AsyncBufRead + Unpin),
    w: &mut (impl AsyncWrite + Unpin),
    state: &State,
) -> std::io::Result<&'static str> {
    let (mechanism, initial) = match arg.split_once(' ') {
        Some((m, i)) => (m, Some(i.trim().to_string())),
        None => (arg, None),
    };
    let (user, pass) = match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(i) => i,
                None => challenge(r, w, "334 ").await?,
            };
            if response == "*" {
                return Ok("501 5.7.0 authentication cancelled");
            }
            // authzid NUL authcid NUL passwd; "=" is an empty initial response.
            let decoded = if response == "=" {
                Some(String::new())
            } else {
                b64_text(&response)
            };
            let fields: Vec<String> = decoded
                .map(|d| d.split('\0').map(str::to_string).collect())
                .unwrap_or_default();
            match fields.as_slice() {
                [_, user, pass] => (user.clone(), pass.clone()),
                _ => return Ok("501 5.5.2 cannot decode AUTH PLAIN response"),
            }
        }
        "LOGIN" => {
            let user = match initial {
                Some(i) => i,
                None => challenge(r, w, "334 VXNlcm5hbWU6").await?, // "Username:"
            };
            if user == "*" {
                return Ok("501 5.7.0 authentication cancelled");
            }
            let pass = challenge(r, w, "334 UGFzc3dvcmQ6").await?; // "Password:"
            match (b64_text(&user), b64_text(&pass)) {
                (Some(user), Some(pass)) => (user, pass),
                _ => return Ok("501 5.5.2 cannot decode AUTH LOGIN response"),
            }
        }
        _ => return Ok("504 5.5.4 unrecognized authentication mechanism"),
    };
    state.logins.lock().unwrap().push((user, pass));
    Ok("235 2.7.0 authentication successful")
}

async fn challenge(
    r: &mut (impl AsyncBufRead + Unpin),
    w: &mut (impl AsyncWrite + Unpin),
    prompt: &str,
) -> std::io::Result<String> {
    reply(w, prompt).await?;
    match read_line(r).await? {
        Some(line) => Ok(String::from_utf8_lossy(&line).trim().to_string()),
        None => Err(std::io::ErrorKind::UnexpectedEof.into()),
    }
}

/// The DATA content up to the line that is exactly `.`, dot-stuffing undone;
/// `None` if the client hung up first.
async fn read_data(r: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<String>> {
    let mut content: Vec<u8> = Vec::new();
    let mut first = true;
    while let Some(line) = read_line(r).await? {
        if line == b"." {
            return Ok(Some(String::from_utf8_lossy(&content).into_owned()));
        }
        if !first {
            content.extend_from_slice(b"\r\n");
        }
        first = false;
        content.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
    }
    Ok(None)
}

/// One line without its CRLF (or bare LF); `None` at end of stream.
async fn read_line(r: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).await? == 0 {
        return Ok(None);
    }
    if line.ends_with(b"\n") {
        line.pop();
    }
    if line.ends_with(b"\r") {
        line.pop();
    }
    Ok(Some(line))
}

async fn reply(w: &mut (impl AsyncWrite + Unpin), text: &str) -> std::io::Result<()> {
    w.write_all(format!("{text}\r\n").as_bytes()).await?;
    w.flush().await
}

/// The address in `FROM:<a@b> PARAMS` / `TO:<a@b>` (prefix case-insensitive).
fn envelope_address(arg: &str, prefix: &str) -> Option<String> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    match rest.strip_prefix('<') {
        Some(inner) => inner.split_once('>').map(|(a, _)| a.to_string()),
        None => rest.split_whitespace().next().map(str::to_string),
    }
}

fn b64_text(s: &str) -> Option<String> {
    B64.decode(s.trim())
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// --- MIME parsing for assertions ---

impl Message {
    /// The first top-level header `name` (case-insensitive), unfolded and
    /// trimmed, still encoded.
    pub fn header(&self, name: &str) -> Option<String> {
        Entity::parse(&self.raw.replace("\r\n", "\n"))
            .header(name)
            .map(str::to_string)
    }

    /// `header` with RFC 2047 encoded words (`=?utf-8?b?..?=`, `=?utf-8?q?..?=`) decoded.
    pub fn decoded_header(&self, name: &str) -> Option<String> {
        self.header(name).map(|v| decode_words(&v))
    }

    /// The decoded Subject.
    pub fn subject(&self) -> Option<String> {
        self.decoded_header("subject")
    }

    /// The first non-attachment `text/plain` part, decoded, with `\n` line endings.
    pub fn text_body(&self) -> Option<String> {
        Entity::parse(&self.raw.replace("\r\n", "\n")).find("text/plain")
    }

    /// The first non-attachment `text/html` part, decoded, with `\n` line endings.
    pub fn html_body(&self) -> Option<String> {
        Entity::parse(&self.raw.replace("\r\n", "\n")).find("text/html")
    }
}

/// A message or body part; `text` uses `\n` line endings.
struct Entity<'a> {
    headers: Vec<(&'a str, String)>,
    body: &'a str,
}

impl<'a> Entity<'a> {
    fn parse(text: &'a str) -> Entity<'a> {
        let (head, body) = match text.strip_prefix('\n') {
            Some(body) => ("", body),
            None => text.split_once("\n\n").unwrap_or((text, "")),
        };
        let mut headers: Vec<(&str, String)> = Vec::new();
        for line in head.split('\n') {
            if line.starts_with([' ', '\t']) {
                // Unfolding: the line break goes, the whitespace stays.
                if let Some((_, value)) = headers.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim(), value.to_string()));
            }
        }
        Entity { headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// The decoded content of the first part of media type `want`, searching
    /// nested multiparts depth-first.
    fn find(&self, want: &str) -> Option<String> {
        let content_type = self.header("content-type").unwrap_or("text/plain");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.to_ascii_lowercase().starts_with("multipart/") {
            let boundary = parameter(content_type, "boundary")?;
            return multipart_parts(self.body, &boundary)
                .into_iter()
                .find_map(|part| Entity::parse(&part).find(want));
        }
        let attachment = self
            .header("content-disposition")
            .is_some_and(|d| d.to_ascii_lowercase().starts_with("attachment"));
        if attachment || !media.eq_ignore_ascii_case(want) {
            return None;
        }
        let encoding = self
            .header("content-transfer-encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "base64" => {
                let compact: String = self.body.split_whitespace().collect();
                B64.decode(compact).expect("a valid base64 body part")
            }
            "quoted-printable" => quoted_printable(self.body),
            _ => self.body.as_bytes().to_vec(),
        };
        Some(String::from_utf8_lossy(&bytes).replace("\r\n", "\n"))
    }
}

/// A `key=value` or `key="value"` parameter of a structured header.
fn parameter(value: &str, key: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The bodies between `--boundary` lines, up to `--boundary--`.
fn multipart_parts(body: &str, boundary: &str) -> Vec<String> {
    let (open, close) = (format!("--{boundary}"), format!("--{boundary}--"));
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in body.split('\n') {
        let delimiter = line.trim_end();
        if delimiter == close {
            break;
        }
        if delimiter == open {
            if let Some(part) = current.replace(Vec::new()) {
                parts.push(part.join("\n"));
            }
        } else if let Some(part) = current.as_mut() {
            part.push(line);
        }
    }
    parts.extend(current.map(|part| part.join("\n")));
    parts
}

fn quoted_printable(body: &str) -> Vec<u8> {
    let lines: Vec<&str> = body.split('\n').collect();
    let mut out = Vec::with_capacity(body.len());
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim_end_matches([' ', '\t']);
        let (line, soft_break) = match line.strip_suffix('=') {
            Some(line) => (line, true),
            None => (line, false),
        };
        out.extend(unescape(line.as_bytes(), false));
        if !soft_break && i + 1 < lines.len() {
            out.push(b'\n');
        }
    }
    out
}

/// `=XX` hex escapes (and `_` as space in RFC 2047 Q encoding).
fn unescape(s: &[u8], underscore_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = s
            .get(i + 1..i + 3)
            .filter(|h| s[i] == b'=' && h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (hex, s[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'_') if underscore_is_space => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    out
}

/// Decodes RFC 2047 encoded words; whitespace between adjacent encoded words
/// is dropped, and their bytes are joined before UTF-8 decoding so a
/// character split across words survives.
fn decode_words(s: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u8> = Vec::new();
    let flush = |out: &mut String, pending: &mut Vec<u8>| {
        out.push_str(&String::from_utf8_lossy(pending));
        pending.clear();
    };
    let mut rest = s;
    while let Some(i) = rest.find("=?") {
        let (before, word) = rest.split_at(i);
        match encoded_word(word) {
            Some((bytes, len)) => {
                if pending.is_empty() || !before.trim().is_empty() {
                    flush(&mut out, &mut pending);
                    out.push_str(before);
                }
                pending.extend(bytes);
                rest = &word[len..];
            }
            None => {
                flush(&mut out, &mut pending);
                out.push_str(&rest[..i + 2]);
                rest = &rest[i + 2..];
            }
        }
    }
    flush(&mut out, &mut pending);
    out.push_str(rest);
    out
}

/// `=?charset?B|Q?text?=` at the start of `word`: its bytes and length.
/// The charset is assumed to be UTF-8 (or ASCII), which is what lettre writes.
fn encoded_word(word: &str) -> Option<(Vec<u8>, usize)> {
    let (charset, rest) = word.strip_prefix("=?")?.split_once('?')?;
    let (encoding, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let text = &rest[..end];
    if charset.is_empty()
        || charset.contains(char::is_whitespace)
        || text.contains(char::is_whitespace)
    {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => B64.decode(text).ok()?,
        "Q" | "q" => unescape(text.as_bytes(), true),
        _ => return None,
    };
    Some((bytes, word.len() - rest.len() + end + 2))
}

// --- self-tests, speaking raw SMTP ---

/// A raw SMTP client for the self-tests.
struct Raw {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    /// Connects and returns the client with the greeting.
    async fn connect(sink: &SmtpSink) -> (Raw, String) {
        let stream = TcpStream::connect(("127.0.0.1", sink.port()))
            .await
            .unwrap();
        let (r, w) = stream.into_split();
        let mut raw = Raw {
            r: BufReader::new(r),
            w,
        };
        let greeting = raw.reply().await;
        (raw, greeting)
    }

    /// One (possibly multi-line) reply, lines joined by `\n`; empty at EOF.
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut self.r).await.unwrap() {
            let line = String::from_utf8(line).unwrap();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        lines.join("\n")
    }

    async fn send(&mut self, text: &str) -> String {
        // One write per command: two small ones would stall on Nagle + delayed ACK.
        self.w
            .write_all(format!("{text}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }
}

#[track_caller]
fn assert_code(reply: &str, code: &str) {
    assert!(reply.starts_with(code), "expected {code}, got {reply:?}");
}

#[tokio::test]
async fn smtp_sink_records_an_authenticated_multipart_message() {
    let sink = SmtpSink::start().await;
    let port = sink.port();
    assert_eq!(sink.url(), format!("smtp://127.0.0.1:{port}?tls=none"));
    assert_eq!(
        sink.url_with_auth("shop", "p@ss:word"),
        format!("smtp://shop:p%40ss%3Aword@127.0.0.1:{port}?tls=none")
    );

    let (mut c, greeting) = Raw::connect(&sink).await;
    assert_code(&greeting, "220 ");
    let ehlo = c.send("EHLO client.example").await;
    assert_code(&ehlo, "250-");
    for feature in ["8BITMIME", "SIZE 10485760", "AUTH PLAIN LOGIN"] {
        assert!(ehlo.contains(&format!("250-{feature}\n")), "{ehlo}");
    }
    assert!(ehlo.lines().last().unwrap().starts_with("250 "), "{ehlo}");

    let plain = B64.encode("\0shop@example.com\0s3cret pass");
    assert_code(&c.send(&format!("AUTH PLAIN {plain}")).await, "235 ");
    assert_code(&c.send("AUTH PLAIN").await, "334 ");
    assert_code(&c.send(&B64.encode("\0second\0pw")).await, "235 ");
    assert_code(&c.send("XYZZY").await, "502 ");
    assert_code(&c.send("DATA").await, "503 ");

    assert_code(
        &c.send("MAIL FROM:<shop@example.com> SIZE=1234 BODY=8BITMIME")
            .await,
        "250 ",
    );
    assert_code(&c.send("RCPT TO:<buyer@example.com>").await, "250 ");
    assert_code(&c.send("rcpt to:<copy@example.com>").await, "250 ");
    assert_code(&c.send("DATA").await, "354 ");

    let subject = "Ihre Bestellung – fertig ✓";
    let html = "<p>Grüße &amp; <b>danke</b></p>\r\n";
    let html_b64 = B64.encode(html);
    let (html_1, html_2) = html_b64.split_at(20);
    let body = [
        "From: Shop <shop@example.com>".to_string(),
        "To: buyer@example.com".into(),
        format!("Subject: =?utf-8?b?{}?=", B64.encode(subject)),
        "X-Folded: first".into(),
        "\tsecond".into(),
        "X-Folded: not this one".into(),
        "MIME-Version: 1.0".into(),
        "Content-Type: multipart/mixed;".into(),
        " boundary=\"outer\"".into(),
        "".into(),
        "--outer".into(),
        "Content-Type: multipart/alternative; boundary=inner".into(),
        "".into(),
        "--inner".into(),
        "Content-Type: text/plain; charset=utf-8".into(),
        "Content-Transfer-Encoding: quoted-printable".into(),
        "".into(),
        "Gr=C3=BC=C3=9Fe, a long line that is soft=".into(),
        "ly broken.".into(),
        "..a line starting with a dot".into(),
        "...".into(),
        "--inner".into(),
        "Content-Type: text/html; charset=utf-8".into(),
        "Content-Transfer-Encoding: base64".into(),
        "".into(),
        html_1.into(),
        html_2.into(),
        "--inner--".into(),
        "--outer".into(),
        "Content-Type: text/plain".into(),
        "Content-Disposition: attachment; filename=receipt.txt".into(),
        "".into(),
        "not the body".into(),
        "--outer--".into(),
    ]
    .join("\r\n");
    assert_code(&c.send(&format!("{body}\r\n.")).await, "250 ");

    // A second message on the same connection, after RSET and NOOP.
    assert_code(&c.send("MAIL FROM:<x@example.com>").await, "250 ");
    assert_code(&c.send("RSET").await, "250 ");
    assert_code(&c.send("NOOP").await, "250 ");
    assert_code(&c.send("MAIL FROM:<>").await, "250 ");
    assert_code(&c.send("RCPT TO:<solo@example.com>").await, "250 ");
    assert_code(&c.send("DATA").await, "354 ");
    let single = "Subject: =?utf-8?q?Caf=C3=A9_ok?= =?utf-8?q?_=E2=9C=93?= done\r\n\
                  Content-Type: text/plain; charset=utf-8\r\n\r\nplain text";
    assert_code(&c.send(&format!("{single}\r\n.")).await, "250 ");
    assert_code(&c.send("QUIT").await, "221 ");
    assert_eq!(c.reply().await, "", "the sink closes after QUIT");

    let messages = sink.wait_for(2).await;
    assert_eq!(messages.len(), 2);
    let m = &messages[0];
    assert_eq!(m.from, "shop@example.com");
    assert_eq!(m.to, ["buyer@example.com", "copy@example.com"]);
    assert!(
        m.raw.contains("\r\n.a line starting with a dot\r\n..\r\n"),
        "{}",
        m.raw
    );
    assert_eq!(m.header("x-FOLDED").as_deref(), Some("first\tsecond"));
    assert!(m.header("subject").unwrap().starts_with("=?utf-8?b?"));
    assert_eq!(m.subject().as_deref(), Some(subject));
    assert_eq!(
        m.decoded_header("From").as_deref(),
        Some("Shop <shop@example.com>")
    );
    assert_eq!(
        m.header("Content-Transfer-Encoding"),
        None,
        "top-level only"
    );
    assert_eq!(
        m.text_body().as_deref(),
        Some("Grüße, a long line that is softly broken.\n.a line starting with a dot\n..")
    );
    assert_eq!(
        m.html_body().as_deref(),
        Some("<p>Grüße &amp; <b>danke</b></p>\n")
    );

    let m = &messages[1];
    assert_eq!(m.from, "");
    assert_eq!(m.to, ["solo@example.com"]);
    assert_eq!(m.subject().as_deref(), Some("Café ok ✓ done"));
    assert_eq!(m.text_body().as_deref(), Some("plain text"));
    assert_eq!(m.html_body(), None);

    assert_eq!(
        sink.logins(),
        [
            ("shop@example.com".to_string(), "s3cret pass".to_string()),
            ("second".into(), "pw".into())
        ]
    );
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn smtp_sink_refuses_the_next_connection_then_works() {
    let sink = SmtpSink::start().await;
    sink.refuse_next(1);
    let (mut refused, greeting) = Raw::connect(&sink).await;
    assert_eq!(greeting, "421 4.3.2 service not available");
    assert_eq!(refused.reply().await, "", "closed after 421");

    let (mut c, greeting) = Raw::connect(&sink).await;
    assert_code(&greeting, "220 ");
    assert_code(&c.send("HELO client").await, "250 ");
    assert_code(&c.send("MAIL FROM:<a@example.com>").await, "250 ");
    assert_code(&c.send("RCPT TO:<b@example.com>").await, "250 ");
    assert_code(&c.send("DATA").await, "354 ");
    assert_code(&c.send("Subject: hi\r\n\r\nbody\r\n.").await, "250 ");
    assert_eq!(sink.wait_for(1).await[0].subject().as_deref(), Some("hi"));
    assert_eq!(sink.connections(), 2);

    sink.set_down(true);
    assert_code(&Raw::connect(&sink).await.1, "421 ");
    sink.set_down(false);
    assert_code(&Raw::connect(&sink).await.1, "220 ");
    assert_eq!(sink.connections(), 4);
}

#[tokio::test]
async fn smtp_sink_auth_login_and_rejected_recipients() {
    let sink = SmtpSink::start().await;
    sink.reject_rcpt(Some("bounce".into()));
    let (mut c, _) = Raw::connect(&sink).await;
    c.send("EHLO client").await;
    assert_eq!(c.send("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.send(&B64.encode("user")).await, "334 UGFzc3dvcmQ6");
    assert_code(&c.send(&B64.encode("pass")).await, "235 ");
    assert_code(&c.send("AUTH CRAM-MD5").await, "504 ");
    assert_eq!(sink.logins(), [("user".to_string(), "pass".to_string())]);

    assert_code(&c.send("MAIL FROM:<a@example.com>").await, "250 ");
    assert_eq!(
        c.send("RCPT TO:<bounce@example.com>").await,
        "550 5.1.1 no such user"
    );
    assert_code(&c.send("DATA").await, "503 ");
    sink.reject_rcpt(None);
    assert_code(&c.send("RCPT TO:<bounce@example.com>").await, "250 ");
    drop(sink);
    // The sink's tasks end with it: the open connection is closed.
    assert_eq!(c.reply().await, "");
}
