//! A real headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`,
//! which `scripts/test` installs), for the console's browser tests. Each browser test saves a
//! screenshot when it fails.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chromedriver process and a browser session on it.
pub struct Browser {
    /// The WebDriver client.
    pub client: fantoccini::Client,
    driver: Child,
    _profile: tempfile::TempDir,
    downloads: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn find(program: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless 1366×768 session.
    pub async fn start() -> Browser {
        let driver_path = find("chromedriver", &["/usr/lib/chromium/chromedriver"]).expect(
            "chromedriver not found: install chromium and chromium-driver (scripts/test does)",
        );
        let chromium = find("chromium", &["/usr/lib/chromium/chromium"])
            .expect("chromium not found: install chromium and chromium-driver (scripts/test does)");
        let port = free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("profile directory");
        let downloads = tempfile::tempdir().expect("download directory");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--window-size=1366,768",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium.to_string_lossy(),
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.path().to_string_lossy(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("browser session opens");
        Browser {
            client,
            driver,
            _profile: profile,
            downloads,
        }
    }

    /// Waits (up to `timeout`) for a finished download whose name ends in `extension` and
    /// returns its path.
    pub async fn downloaded(&self, extension: &str, timeout: Duration) -> Option<PathBuf> {
        let deadline = Instant::now() + timeout;
        loop {
            let done = std::fs::read_dir(self.downloads.path())
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|e| e == extension));
            if done.is_some() || Instant::now() > deadline {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot of the current page under the test's output directory.
    pub async fn screenshot(&self, dir: &std::path::Path, name: &str) -> Option<PathBuf> {
        let png = self.client.screenshot().await.ok()?;
        std::fs::create_dir_all(dir).ok()?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).ok()?;
        Some(path)
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
