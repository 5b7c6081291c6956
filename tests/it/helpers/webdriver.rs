//! A small W3C WebDriver client over `reqwest`: Debian's headless Chromium
//! driven through its chromedriver. Each `Browser` owns its chromedriver
//! (on a free loopback port) and a fresh profile directory, so browser tests
//! run in parallel. Methods panic with a clear message on failure; waits
//! poll with a deadline and never sleep a fixed time for readiness.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::{
    process::{Child, Command},
    time::{Instant, sleep},
};

/// How long starting and the `wait_*` methods wait before failing.
const PATIENCE: Duration = Duration::from_secs(20);
/// How often they look again.
const POLL: Duration = Duration::from_millis(50);
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const MISSING: &str = "the browser test needs Debian's chromium and chromium-driver: \
                       sudo apt-get install -y chromium chromium-driver (.ci/run installs them)";
/// Environment variables that make a missing browser a failure instead of a
/// skip: `CI` as CI services set it (`true`, or `1`), or this test's own switch.
const REQUIRE_VARS: [&str; 2] = ["CI", "REQUIRE_BROWSER_TEST"];
/// Without the background-networking flags, Chromium's connections are
/// refused on a closed network.
const ARGS: &str = "--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run \
                    --disable-background-networking --disable-component-update --disable-sync \
                    --disable-dev-shm-usage --window-size=1280,900";

/// What a wait reads from an element.
#[derive(Clone, Copy)]
pub enum Probe<'a> {
    Text,
    Attribute(&'a str),
}

pub struct Browser {
    http: reqwest::Client,
    port: u16,
    /// The WebDriver session; `None` once quit.
    session: Option<String>,
    driver: Child,
    /// Holds `profile/` (Chromium's user data) and `chromedriver.log`.
    dir: tempfile::TempDir,
}

/// `CHROMEDRIVER`, else `/usr/bin/chromedriver`, else `chromedriver` on `PATH`.
fn find_chromedriver() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMEDRIVER") {
        // An explicit choice is trusted (it may name a program on PATH).
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/bin"))
        .chain(std::env::split_paths(&path))
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

/// `CHROMIUM`, else `/usr/bin/chromium`.
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// What is missing for a browser test on this machine, if anything.
pub fn missing_browser() -> Option<String> {
    let mut missing = Vec::new();
    let binary = chromium();
    if !Path::new(&binary).is_file() {
        missing.push(format!("Chromium ({binary})"));
    }
    if find_chromedriver().is_none() {
        missing.push("chromedriver (/usr/bin/chromedriver, $CHROMEDRIVER or on PATH)".into());
    }
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// Whether a missing browser must fail the test rather than skip it.
fn browser_required() -> bool {
    REQUIRE_VARS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|x| x.eq_ignore_ascii_case("true") || x == "1"))
}

/// The first line of a browser test: `true` when Chromium and chromedriver
/// are installed. Without them it prints on stderr what is missing and how
/// to install it, and returns `false` so the test skips; under CI (`CI=true`
/// or `REQUIRE_BROWSER_TEST=1`) it fails the test instead, so a CI
/// machine without a browser is never silently green.
/// axe-core's script, from the file `AXE_CORE_JS` names (`.ci/run` gets it
/// from the npm registry); None, said on stderr, where it is not set outside CI.
pub fn axe_or_skip(test: &str) -> Option<String> {
    match std::env::var("AXE_CORE_JS") {
        Ok(path) => Some(
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("AXE_CORE_JS={path}: {e}")),
        ),
        Err(_) => {
            assert!(
                !browser_required(),
                "{test}: AXE_CORE_JS is not set, and axe-core is required here (CI)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED the axe-core checks of {test}: set AXE_CORE_JS to axe.min.js \
                 (`npm pack axe-core@4` and unpack it; .ci/run does this)."
            );
            None
        }
    }
}

pub fn browser_or_skip(test: &str) -> bool {
    let Some(missing) = missing_browser() else {
        return true;
    };
    assert!(
        !browser_required(),
        "{test}: {missing} not found, and a browser is required here \
         (CI or REQUIRE_BROWSER_TEST is set). {MISSING}"
    );
    // Straight to the process's stderr: the test harness captures `eprintln!`
    // of a passing test, and a skip must be seen without `--nocapture`.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {missing} not found. Install them with \
         `apt-get install chromium chromium-driver` (as root; .ci/run does this) \
         to run it. Set CI=true or REQUIRE_BROWSER_TEST=1 to fail instead of skipping."
    );
    false
}

impl Browser {
    /// Starts chromedriver, waits until it is ready and opens a headless Chromium.
    pub async fn start() -> Browser {
        let exe = find_chromedriver().unwrap_or_else(|| panic!("{MISSING}"));
        let binary = chromium();
        assert!(
            Path::new(&binary).is_file(),
            "{MISSING} ({binary} is missing)"
        );
        let dir = tempfile::tempdir().unwrap();
        // A port the OS just handed out, freed for chromedriver to bind.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        let driver = Command::new(&exe)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{MISSING}; cannot run {}: {e}", exe.display()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut b = Browser {
            http,
            port,
            session: None,
            driver,
            dir,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(v) = b.call(Method::GET, "/status", None).await
                && v["ready"] == true
            {
                break;
            }
            if let Ok(Some(exit)) = b.driver.try_wait() {
                panic!(
                    "chromedriver exited ({exit}) before it was ready\n{}",
                    b.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready in {PATIENCE:?}\n{}",
                b.log()
            );
            sleep(POLL).await;
        }
        let profile = format!("--user-data-dir={}", b.dir.path().join("profile").display());
        let args: Vec<&str> = ARGS.split_whitespace().chain([profile.as_str()]).collect();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "timeouts": {"implicit": 0, "pageLoad": 20_000, "script": 10_000},
            "goog:chromeOptions": {"binary": binary, "args": args},
        }}});
        let v = b.call(Method::POST, "/session", Some(caps)).await;
        let v = v.unwrap_or_else(|e| panic!("cannot start Chromium: {e}\n{}", b.log()));
        b.session = Some(string(&v["sessionId"]));
        b
    }

    /// Navigates and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.must(Method::POST, "/url", json!({ "url": url })).await;
    }

    /// Resizes the window (e.g. to a phone's width for a screenshot).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.must(
            Method::POST,
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    pub async fn current_url(&self) -> String {
        string(&self.must(Method::GET, "/url", Value::Null).await)
    }

    /// The first element matching `css`; panics (showing the page) if none does.
    pub async fn find(&self, css: &str) -> String {
        match self.cmd(Method::POST, "/element", by_css(css)).await {
            Ok(v) => string(&v[ELEMENT]),
            Err(e) => panic!("no element matches {css}: {e}\n{}", self.excerpt().await),
        }
    }

    /// Every element matching `css`, in document order (maybe none).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        elements(&self.must(Method::POST, "/elements", by_css(css)).await)
    }

    pub async fn click(&self, el: &str) {
        self.must(Method::POST, &format!("/element/{el}/click"), json!({}))
            .await;
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, el: &str, text: &str) {
        let path = format!("/element/{el}/value");
        self.must(Method::POST, &path, json!({ "text": text }))
            .await;
    }

    /// The element's rendered text.
    pub async fn text(&self, el: &str) -> String {
        string(
            &self
                .must(Method::GET, &format!("/element/{el}/text"), Value::Null)
                .await,
        )
    }

    /// The attribute as written in the page (`href` stays relative), if present.
    pub async fn attribute(&self, el: &str, name: &str) -> Option<String> {
        let path = format!("/element/{el}/attribute/{name}");
        self.must(Method::GET, &path, Value::Null)
            .await
            .as_str()
            .map(str::to_string)
    }

    pub async fn page_source(&self) -> String {
        string(&self.must(Method::GET, "/source", Value::Null).await)
    }

    /// Runs axe-core (the file `AXE_CORE_JS` names) on the page and returns
    /// its violations as `rule (impact): selectors` lines; empty when none.
    pub async fn axe_violations(&self, axe_js: &str) -> Vec<String> {
        let script = format!(
            "{axe_js}\n;const done = arguments[arguments.length - 1];\
             axe.run(document, {{resultTypes: ['violations']}})\
               .then(r => done(r.violations.map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))))\
               .catch(e => done(['axe failed: ' + e]));"
        );
        let v = self
            .must(
                Method::POST,
                "/execute/async",
                json!({"script": script, "args": []}),
            )
            .await;
        v.as_array()
            .map(|a| a.iter().map(string).collect())
            .unwrap_or_else(|| vec![format!("axe answered {v}")])
    }

    /// What makes the page scroll sideways at the current width: the page
    /// itself, any table wider than its scrolling wrapper, and the widest
    /// elements reaching past the viewport. Empty when nothing does.
    pub async fn sideways_overflow(&self) -> Vec<String> {
        // Elements inside a scrolling or clipping box (a `pre`, an ellipsis)
        // do not move the page; tables are judged by their wrapper instead.
        let script = r#"
            const vw = document.documentElement.clientWidth, out = [];
            const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
              (typeof e.className === 'string' && e.className.trim() ? '.' + e.className.trim().split(/\s+/).join('.') : '');
            const clipped = e => { for (let p = e.parentElement; p && p !== document.body; p = p.parentElement)
              if (getComputedStyle(p).overflowX !== 'visible') return true; return false; };
            if (document.documentElement.scrollWidth > vw) out.push('page ' + document.documentElement.scrollWidth + ' > ' + vw);
            for (const w of document.querySelectorAll('.table-wrap'))
              if (w.scrollWidth > w.clientWidth + 1) out.push(name(w) + ' ' + w.scrollWidth + ' > ' + w.clientWidth);
            for (const e of document.querySelectorAll('body *')) {
              const r = e.getBoundingClientRect();
              if (r.width > 0 && r.right > vw + 1 && getComputedStyle(e).position !== 'fixed' && !clipped(e))
                out.push(name(e) + ' ends at ' + Math.round(r.right));
            }
            return [vw + ' px wide'].concat(out.slice(0, 12));"#;
        let v = self
            .must(
                Method::POST,
                "/execute/sync",
                json!({"script": script, "args": []}),
            )
            .await;
        let mut lines: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(string).collect())
            .unwrap_or_else(|| vec![format!("script answered {v}")]);
        let width = lines.remove(0);
        if lines.is_empty() {
            lines
        } else {
            lines.insert(0, width);
            lines
        }
    }

    /// Writes a PNG of the viewport to `path`, creating its directory.
    pub async fn screenshot_png(&self, path: &Path) {
        let v = self.must(Method::GET, "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(string(&v))
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Polls until an element matching `css` has text containing `expected`; returns it.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> String {
        self.poll(css, Probe::Text, &|t| t.contains(expected), None)
            .await
    }

    /// Like `wait_for_text`, but loads `url` again between looks (for state
    /// the server renders). The current page is looked at first, as it is.
    pub async fn wait_for_text_reloading(&self, url: &str, css: &str, expected: &str) -> String {
        self.poll(css, Probe::Text, &|t| t.contains(expected), Some(url))
            .await
    }

    /// Polls until an element matching `css` has a probed value for which `ok` holds; returns it.
    pub async fn wait_for(
        &self,
        css: &str,
        probe: Probe<'_>,
        ok: impl Fn(&str) -> bool + Sync,
    ) -> String {
        self.poll(css, probe, &ok, None).await
    }

    /// Polls until `el` has left the page, i.e. a navigation replaced the page it was in.
    pub async fn wait_until_gone(&self, el: &str) {
        let deadline = Instant::now() + PATIENCE;
        let path = format!("/element/{el}/name");
        while self.cmd(Method::GET, &path, Value::Null).await.is_ok() {
            if Instant::now() >= deadline {
                panic!(
                    "the page did not change in {PATIENCE:?}\n{}",
                    self.excerpt().await
                );
            }
            sleep(POLL).await;
        }
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn quit(mut self) {
        if let Some(id) = self.session.take() {
            let r = self
                .call(Method::DELETE, &format!("/session/{id}"), None)
                .await;
            r.unwrap_or_else(|e| panic!("cannot end the session: {e}"));
        }
        let _ = self.driver.kill().await;
    }

    async fn poll(
        &self,
        css: &str,
        probe: Probe<'_>,
        ok: &(dyn Fn(&str) -> bool + Sync),
        reload: Option<&str>,
    ) -> String {
        let deadline = Instant::now() + PATIENCE;
        let (mut seen, mut last_error) = (Vec::new(), String::new());
        loop {
            match self.look(css, probe).await {
                Ok(found) => match found.iter().find(|(_, value)| ok(value)) {
                    Some((el, _)) => return el.clone(),
                    None => seen = found.into_iter().map(|(_, value)| value).collect(),
                },
                // E.g. a stale element while the page changes: look again.
                Err(e) => last_error = e,
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {PATIENCE:?} waiting for {css} to match \
                     (last seen: {seen:?}; last error: {last_error})\n{}",
                    self.excerpt().await
                );
            }
            sleep(POLL).await;
            if let Some(url) = reload {
                let _ = self.cmd(Method::POST, "/url", json!({ "url": url })).await;
            }
        }
    }

    /// Every element matching `css`, with its probed value.
    async fn look(&self, css: &str, probe: Probe<'_>) -> Result<Vec<(String, String)>, String> {
        let mut found = Vec::new();
        for el in elements(&self.cmd(Method::POST, "/elements", by_css(css)).await?) {
            let path = match probe {
                Probe::Text => format!("/element/{el}/text"),
                Probe::Attribute(name) => format!("/element/{el}/attribute/{name}"),
            };
            let value = string(&self.cmd(Method::GET, &path, Value::Null).await?);
            found.push((el, value));
        }
        Ok(found)
    }

    /// The current URL and the start of the page, for failure messages.
    async fn excerpt(&self) -> String {
        let url = self
            .cmd(Method::GET, "/url", Value::Null)
            .await
            .unwrap_or_default();
        let source = self
            .cmd(Method::GET, "/source", Value::Null)
            .await
            .unwrap_or_default();
        let source: String = string(&source).chars().take(4000).collect();
        format!("--- page at {url} (first 4000 chars) ---\n{source}")
    }

    /// A session command that must succeed.
    async fn must(&self, method: Method, path: &str, body: Value) -> Value {
        let r = self.cmd(method.clone(), path, body).await;
        r.unwrap_or_else(|e| panic!("WebDriver {method} {path} failed: {e}"))
    }

    /// A command within the session: its `value`, or the WebDriver error.
    async fn cmd(&self, method: Method, path: &str, body: Value) -> Result<Value, String> {
        let id = self.session.as_deref().expect("the session is open");
        self.call(method, &format!("/session/{id}{path}"), Some(body))
            .await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut req = self.http.request(method.clone(), url);
        if method == Method::POST {
            // chromedriver wants a JSON object in every POST.
            req = req.json(&body.filter(Value::is_object).unwrap_or_else(|| json!({})));
        }
        let r = req.send().await.map_err(|e| format!("chromedriver: {e}"))?;
        let status = r.status();
        let mut v: Value = r
            .json()
            .await
            .map_err(|e| format!("{status} without JSON: {e}"))?;
        if status.is_success() {
            return Ok(v["value"].take());
        }
        Err(format!(
            "{status} {}: {}",
            v["value"]["error"], v["value"]["message"]
        ))
    }

    /// The end of chromedriver's (and Chromium's) output.
    fn log(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let tail: String = log
            .chars()
            .skip(log.chars().count().saturating_sub(3000))
            .collect();
        format!("--- chromedriver log (end) ---\n{tail}")
    }
}

fn string(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn by_css(css: &str) -> Value {
    json!({"using": "css selector", "value": css})
}

fn elements(v: &Value) -> Vec<String> {
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter().map(|e| string(&e[ELEMENT])).collect()
}

impl Drop for Browser {
    /// Best effort, without a runtime: end the session so chromedriver closes
    /// Chromium (killing chromedriver alone orphans it), then kill it.
    fn drop(&mut self) {
        if let Some(id) = self.session.take()
            && let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let port = self.port;
            let request =
                format!("DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            // chromedriver answers once the session is gone but keeps the
            // connection open: the first bytes are enough.
            if s.write_all(request.as_bytes()).is_ok() {
                let _ = s.read(&mut [0; 512]);
            }
        }
        let _ = self.driver.start_kill();
    }
}
