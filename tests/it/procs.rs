//! Processes the tests start and stop: servers from Debian or PyPI (Prometheus, rotel, Caddy) and
//! the `ragchat` binary itself, killed if a test ends before stopping them.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) if the test ends before it stops.
pub struct Proc {
    pub child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `command` with stdout and stderr collected.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut out = output.lock().expect("lock");
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Self { child, output }
    }

    pub fn output(&self) -> String {
        self.output.lock().expect("lock").clone()
    }

    /// SIGTERM, then the exit within `bound`.
    pub fn terminate(&mut self, bound: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                t.elapsed() < bound,
                "did not exit within {bound:?} of SIGTERM:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A tool `make test` installs (Prometheus, promtool from Debian; rotel from PyPI).
pub fn tool(name: &str) -> PathBuf {
    let var = format!("RAGCHAT_TEST_{}", name.to_ascii_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        return path.into();
    }
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    on_path.map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{name} is not installed: run the tests with `make test` (it installs it), or set {var}"
        )
    })
}
