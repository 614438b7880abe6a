//! A real `redis-server` per test, on a free loopback port, killed when dropped. (Shared
//! with the facade's tests, which include this file by path.)
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// The server's working directory (its AOF, for a server that persists), named
    /// `chatstack-redis-test-*` so that CI can tell the tests' servers apart; removed on
    /// drop.
    dir: PathBuf,
    persistent: bool,
    binary: PathBuf,
}

impl RedisServer {
    /// A server without persistence; `None` (with a note on stderr) when `redis-server` is
    /// not installed, unless `CI` is set, where its absence fails the test.
    pub fn start() -> Option<Self> {
        Self::launch(false)
    }

    /// A server that persists every write (`appendfsync always`), so that a restart keeps
    /// the figures, as money needs.
    pub fn start_persistent() -> Option<Self> {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> Option<Self> {
        let Some(binary) = find_on_path("redis-server") else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "redis-server is not on PATH, and CI is set: the Redis tests must run \
                     (install the Debian package `redis-server`; .ci/run does)"
                );
            }
            eprintln!("note: redis-server is not on PATH; skipping this Redis test");
            return None;
        };
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "chatstack-redis-test-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the server");
        let mut server = Self {
            child: None,
            port,
            dir,
            persistent,
            binary,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.binary);
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        command.arg("--dir").arg(&self.dir);
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not listen on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL: no chance to save or say goodbye).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (and AOF directory).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a free port");
    listener.local_addr().unwrap().port()
}
