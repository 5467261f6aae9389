//! A real browser for tests: headless Chromium driven through chromedriver's WebDriver
//! protocol (JSON over HTTP on loopback), with just the commands the dashboard tests use.

use crate::Proc;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A chromedriver process and one browser session in it.
pub struct Browser {
    _driver: Proc,
    port: u16,
    session: String,
}

/// Where Debian's packages put them (`apt-get install chromium chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session;
    /// `dir` holds its log and the browser profile.
    pub async fn start(dir: &Path) -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "chromedriver missing: apt-get install chromium chromium-driver (scripts/install-deps.sh --test)"
        );
        let port = voiyd_testkit::nats::free_port();
        let driver = Proc::spawn(
            Path::new(CHROMEDRIVER),
            &[&format!("--port={port}"), "--allowed-ips=127.0.0.1"],
            &[],
            dir.join("chromedriver.log"),
        );
        let start = Instant::now();
        loop {
            if let Ok(v) = http(port, "GET", "/status", None).await {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver not ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = dir.join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         format!("--user-data-dir={}", profile.display())],
            }
        }}});
        let v = http(port, "POST", "/session", Some(caps))
            .await
            .expect("a browser session");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            _driver: driver,
            port,
            session,
        }
    }

    /// A WebDriver command of this session; its `value`, or a panic with the error.
    pub async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        if v["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    /// Opens `url`.
    pub async fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs JavaScript in the page; its return value.
    pub async fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.script("return document.body.innerText")
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits (`deadline` at most) until the page's text holds every one of `wanted`.
    pub async fn wait_for_text(&self, wanted: &[&str], deadline: Duration) -> String {
        let start = Instant::now();
        loop {
            let text = self.text().await;
            if wanted.iter().all(|w| text.contains(w)) {
                return text;
            }
            assert!(
                start.elapsed() < deadline,
                "the page never showed {wanted:?}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks the first element matching the CSS selector.
    pub async fn click(&self, css: &str) {
        let e = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = e
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {e}"))
            .to_string();
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    /// Waits for a dialog (alert, confirm, prompt); its text.
    pub async fn dialog(&self) -> String {
        let start = Instant::now();
        loop {
            let v = http(
                self.port,
                "GET",
                &format!("/session/{}/alert/text", self.session),
                None,
            )
            .await
            .unwrap_or(Value::Null);
            if let Some(t) = v["value"].as_str() {
                return t.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no dialog opened"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types into the open prompt.
    pub async fn answer(&self, text: &str) {
        self.cmd("POST", "/alert/text", Some(json!({ "text": text })))
            .await;
    }

    /// Accepts (OK) the open dialog.
    pub async fn accept(&self) {
        self.cmd("POST", "/alert/accept", Some(json!({}))).await;
    }

    /// Dismisses (Cancel) the open dialog.
    pub async fn dismiss(&self) {
        self.cmd("POST", "/alert/dismiss", Some(json!({}))).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session ends with its driver, killed by Proc's drop; closing it first lets
        // Chromium exit on its own.
        let (port, session) = (self.port, self.session.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| {
                    rt.block_on(async {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            http(port, "DELETE", &format!("/session/{session}"), None),
                        )
                        .await;
                    })
                })
        })
        .join();
    }
}

/// One HTTP/1.1 request on a fresh loopback connection; the JSON body of the reply.
async fn http(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open whatever the request says: read the head,
    // then as much body as it announces.
    let read = async {
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = c.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok::<_, String>(raw);
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let head = head.to_ascii_lowercase();
            let length = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            let done = match length {
                Some(n) => body.len() >= n,
                None => head.contains("chunked") && body.ends_with("0\r\n\r\n"),
            };
            if done {
                return Ok(raw);
            }
        }
    };
    let raw = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .map_err(|_| "no reply within 60 s".to_string())??;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {text}"))?;
    let json = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    serde_json::from_str(&json).map_err(|e| format!("{e}: {json}"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
