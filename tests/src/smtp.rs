//! A real SMTP server on loopback (aiosmtpd from Debian's python3-aiosmtpd,
//! started from `tests/smtp/server.py`), scripted to answer DATA with given
//! codes. Accepted messages land as files the tests parse back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SmtpServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts on a free port. `script`: reply codes for successive DATA
    /// commands before it accepts everything; `delay_ms` delays each reply.
    pub fn start(script: &[u16], delay_ms: u64) -> SmtpServer {
        SmtpServer::start_on(crate::free_port(), script, delay_ms)
    }

    pub fn start_on(port: u16, script: &[u16], delay_ms: u64) -> SmtpServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let script: Vec<String> = script.iter().map(u16::to_string).collect();
        // Debian's interpreter: that is where python3-aiosmtpd is installed.
        let mut child = Command::new("/usr/bin/python3")
            .arg(crate::workspace_root().join("tests/smtp/server.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .arg(script.join(","))
            .arg(delay_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP server (apt install python3-aiosmtpd)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("read from the SMTP server");
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        SmtpServer { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The accepted messages so far, in order.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        for n in 1.. {
            match std::fs::read(self.dir.path().join(format!("{n}.eml"))) {
                Ok(bytes) => found.push(bytes),
                Err(_) => break,
            }
        }
        found
    }

    /// Every DATA command seen: (reply code, Message-ID).
    pub fn log(&self) -> Vec<(u16, String)> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (code, id) = l.split_once(' ')?;
                Some((code.parse().ok()?, id.to_owned()))
            })
            .collect()
    }

    /// Waits until at least `n` messages were accepted.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived within {within:?}; log: {:?}",
                messages.len(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
