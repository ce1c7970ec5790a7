//! Headless Chromium driven over WebDriver (Debian `chromium` and `chromium-driver`), for the
//! operator UI's tests. Host resolution is mapped away so nothing can leave loopback, and the
//! performance log records every request the page makes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::service::Service;

pub struct Browser {
    _driver: Service,
    http: reqwest::Client,
    session: String,
}

impl Drop for Browser {
    /// Ends the WebDriver session, so chromedriver quits the browser it started (the browser
    /// lives in a process group of its own and would outlive chromedriver), then kills
    /// whatever of it is left, found by this browser's own profile directory.
    fn drop(&mut self) {
        use std::io::{Read as _, Write as _};
        let quit = std::net::TcpStream::connect(("127.0.0.1", self._driver.port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            )?;
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            Ok(())
        });
        drop(quit);
        let profile = self._driver.dir.path().join("profile");
        let _ = std::process::Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(profile.display().to_string())
            .status();
    }
}

/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    pub async fn start() -> Browser {
        let driver = Service::start("chromedriver", "chromedriver", &["--port={port}"]).await;
        let http = reqwest::Client::new();
        let profile = driver.dir.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    // Every name resolves to nothing: only literal loopback addresses work.
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    format!("--user-data-dir={}", profile.display())],
                "prefs": {"download.default_directory": driver.dir.path().join("downloads"),
                    "download.prompt_for_download": false},
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }}});
        let url = format!("http://127.0.0.1:{}/session", driver.port);
        let v: Value = http
            .post(&url)
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("session JSON");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {v}"))
            .to_string();
        Browser {
            _driver: driver,
            http,
            session,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/session/{}{path}",
            self._driver.port, self.session
        );
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("WebDriver JSON");
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.post(
            "/window/rect",
            json!({"width": width, "height": height, "x": 0, "y": 0}),
        )
        .await;
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// The element matching `css`, waiting up to 10 s for it to appear.
    pub async fn wait(&self, css: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self
                .post("/element", json!({"using": "css selector", "value": css}))
                .await;
            if v.get(ELEMENT).is_some() {
                return v;
            }
            assert!(
                Instant::now() < until,
                "no element {css} after 10 s ({v}); page text: {}",
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        let v = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        v.as_array().map_or(0, Vec::len)
    }

    pub async fn text(&self, css: &str) -> String {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Waits up to `secs` for the text of `css` to contain `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str, secs: u64) -> String {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text(css).await;
            if t.contains(needle) {
                return t;
            }
            assert!(
                Instant::now() < until,
                "{css} never showed {needle:?} within {secs} s; it shows: {t}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.wait(css).await;
        let id = el[ELEMENT].as_str().unwrap_or_default().to_string();
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        let v = self
            .post(&format!("/element/{id}/value"), json!({"text": text}))
            .await;
        assert!(v.is_null(), "typing into {css}: {v}");
    }

    /// Clicks `css`; a live screen may redraw between finding and clicking, so a stale or
    /// not-yet-interactable element is looked up again for a few seconds.
    pub async fn click(&self, css: &str) {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let el = self.wait(css).await;
            let id = el[ELEMENT].as_str().unwrap_or_default().to_string();
            let v = self.post(&format!("/element/{id}/click"), json!({})).await;
            if v.is_null() {
                return;
            }
            let retry = ["stale element reference", "element not interactable"]
                .iter()
                .any(|e| v["error"] == *e);
            if !retry || Instant::now() > until {
                self.screenshot("failed-click").await;
                panic!("clicking {css}: {}", v["message"]);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The files the page downloaded, waiting up to 10 s for `name` to be complete.
    pub async fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self._driver.dir.path().join("downloads").join(name);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                if !bytes.is_empty() {
                    return bytes;
                }
            }
            assert!(Instant::now() < until, "no download {name}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Answers the open `prompt()` dialog with `text` and accepts it.
    pub async fn answer_prompt(&self, text: &str) {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.post("/alert/text", json!({"text": text})).await;
            if v.is_null() {
                break;
            }
            assert!(Instant::now() < until, "no prompt to answer: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.accept_dialog().await;
    }

    /// Accepts the open `confirm()` dialog, waiting up to 5 s for it.
    pub async fn accept_dialog(&self) {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.post("/alert/accept", json!({})).await;
            if v.is_null() {
                return;
            }
            assert!(Instant::now() < until, "no dialog to accept: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text a QR code drawn in `css` holds, read from a screenshot of the element.
    pub async fn read_qr(&self, css: &str) -> String {
        use base64::Engine;
        let el = self.wait(css).await;
        let id = el[ELEMENT].as_str().unwrap_or_default().to_string();
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{id}/screenshot"),
                None,
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("element screenshot is base64");
        let mut dec = png::Decoder::new(std::io::Cursor::new(png));
        dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = dec.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
        let info = reader.next_frame(&mut buf).expect("PNG frame");
        let channels = info.color_type.samples();
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
            let p = &buf[(y * w + x) * channels..];
            if channels >= 3 {
                ((u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) / 3) as u8
            } else {
                p[0]
            }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in {css} ({w}×{h} px)");
        let (_, text) = grids[0].decode().expect("the QR code decodes");
        text
    }

    /// Scrolls `css` into the middle of the viewport (for screenshots of what matters).
    pub async fn scroll_to(&self, css: &str) {
        self.wait(css).await;
        self.exec(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
            json!([css]),
        )
        .await;
    }

    /// The address the page shows.
    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The `value` property of the element matching `css`.
    pub async fn value(&self, css: &str) -> String {
        self.wait(css).await;
        self.exec(
            "return document.querySelector(arguments[0]).value;",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// A PNG of the viewport under `<target>/ui-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Console messages at level SEVERE (errors, CSP violations, failed loads) since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let v = self.post("/se/log", json!({"type": "browser"})).await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Every URL the page requested since the last call.
    pub async fn requested_urls(&self) -> Vec<String> {
        let v = self.post("/se/log", json!({"type": "performance"})).await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
            .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
            .filter_map(|m| {
                m["message"]["params"]["request"]["url"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    }
}

/// `<target>/ui-screenshots`, wherever the target directory is.
pub fn screenshot_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).join("ui-screenshots")
}

// ---- helpers shared by the UI tests ----

/// Desktop, 10-inch tablet and phone viewports.
const WIDTHS: [(&str, u32, u32); 3] = [
    ("desktop", 1280, 900),
    ("tablet", 800, 1280),
    ("phone", 390, 844),
];

pub async fn shoot(b: &Browser, screen: &str) {
    for (name, w, h) in WIDTHS {
        b.resize(w, h).await;
        b.screenshot(&format!("{screen}-{name}")).await;
    }
    b.resize(1280, 900).await;
}

/// Chrome logs every 4xx answer as a console error; the API's refusals the UI shows are
/// expected, a failed load of the UI's own files is not.
pub fn api_refusal(msg: &str) -> bool {
    msg.contains("Failed to load resource: the server responded with a status of 4")
        && !msg.contains("/_/")
}

/// Opens the UI and signs in with `token`, waiting until the header names `who`.
pub async fn sign_in(b: &Browser, g: &super::Gateway, token: &str, who: &str) {
    b.goto(&format!("{}/_/", g.base())).await;
    b.type_into("#token", &format!("{token}\n")).await;
    b.wait_text("#who", who, 10).await;
}

pub async fn clean(b: &Browser) {
    let urls = quiet(b).await;
    assert!(
        urls.iter().any(|u| u.contains("/_/app.js")),
        "the request log records the page's loads: {urls:?}"
    );
}

/// No console errors (but the API's refusals) and no request off loopback since the last
/// look; returns the URLs requested.
pub async fn quiet(b: &Browser) -> Vec<String> {
    let errors: Vec<String> = b
        .console_errors()
        .await
        .into_iter()
        .filter(|e| !api_refusal(e))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    // Every control on the screen has a name a screen reader says.
    let unlabelled = b
        .exec(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
                .map(e => e.outerHTML.slice(0, 120))",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, json!([]), "controls without a label");
    let urls = b.requested_urls().await;
    let off: Vec<&String> = urls
        .iter()
        // The browser's own chrome:// pages are not network requests.
        .filter(|u| u.starts_with("http") || u.starts_with("ws"))
        .filter(|u| !u.starts_with("http://127.0.0.1:"))
        .collect();
    assert!(off.is_empty(), "requests off loopback: {off:?}");
    urls
}
