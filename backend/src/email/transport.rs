//! Where messages go: `.eml` files in the data folder (the default), or an
//! SMTP server, optionally DKIM-signed.
//!
//! SMTP uses lettre's blocking transport on tokio's blocking threads: it puts
//! `email.timeout` on every connect, read and write, so a send always ends
//! by itself, and its connection pool never gets back a connection whose
//! exchange was cut off half-way (lettre's async transport times out only
//! the connect; bounding it from outside would cancel sends mid-exchange).

use crate::config::{DkimAlgorithm, EmailConfig, EmailTransport};
use lettre::message::dkim::{DkimConfig, DkimSigningAlgorithm, DkimSigningKey};
use lettre::message::header::HeaderName;
use lettre::transport::smtp::PoolConfig;
use lettre::{Message, SmtpTransport, Transport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How an attempt to hand a message over failed.
#[derive(Debug)]
pub enum SendError {
    /// Worth another try later: a 4xx answer, a timeout, a lost connection.
    Temporary(String),
    /// Will not work however often it is tried: a 5xx answer.
    Permanent(String),
}

pub struct Mailer {
    kind: Kind,
    dkim: Option<DkimConfig>,
}

enum Kind {
    Files(PathBuf),
    Smtp(Arc<SmtpTransport>),
}

/// Why the mailer could not be set up; names the config key.
#[derive(Debug)]
pub struct SetupError {
    pub key: &'static str,
    pub problem: String,
}

impl Mailer {
    pub fn new(config: &EmailConfig, data_dir: &Path) -> Result<Mailer, SetupError> {
        let kind = match config.transport {
            EmailTransport::File => Kind::Files(data_dir.join("mail")),
            EmailTransport::Smtp => {
                let url = config.smtp_url.as_deref().ok_or(SetupError {
                    key: "email.smtp_url",
                    problem: "is missing".to_owned(),
                })?;
                let transport = SmtpTransport::from_url(url)
                    .map_err(|e| SetupError {
                        key: "email.smtp_url",
                        problem: e.to_string(),
                    })?
                    .timeout(Some(config.timeout))
                    .pool_config(
                        PoolConfig::new()
                            .max_size(4)
                            .idle_timeout(Duration::from_secs(60)),
                    )
                    .build();
                Kind::Smtp(Arc::new(transport))
            }
        };
        let dkim = match &config.dkim {
            None => None,
            Some(dkim) => {
                let key_text = std::fs::read_to_string(&dkim.key_file).map_err(|e| SetupError {
                    key: "email.dkim.key_file",
                    problem: format!("cannot read {}: {e}", dkim.key_file.display()),
                })?;
                let algorithm = match dkim.algorithm {
                    DkimAlgorithm::Rsa => DkimSigningAlgorithm::Rsa,
                    DkimAlgorithm::Ed25519 => DkimSigningAlgorithm::Ed25519,
                };
                let key =
                    DkimSigningKey::new(key_text.trim(), algorithm).map_err(|e| SetupError {
                        key: "email.dkim.key_file",
                        problem: format!("not a usable key: {e}"),
                    })?;
                let headers = SIGNED_HEADERS
                    .into_iter()
                    .map(HeaderName::new_from_ascii_str)
                    .collect();
                Some(DkimConfig::new(
                    dkim.selector.clone(),
                    dkim.domain.clone(),
                    key,
                    headers,
                    lettre::message::dkim::DkimCanonicalization {
                        header: lettre::message::dkim::DkimCanonicalizationType::Relaxed,
                        body: lettre::message::dkim::DkimCanonicalizationType::Relaxed,
                    },
                ))
            }
        };
        Ok(Mailer { kind, dkim })
    }

    /// Where file mail goes, if that is the transport.
    pub fn mail_dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Files(dir) => Some(dir),
            Kind::Smtp(_) => None,
        }
    }

    /// Signs (when configured) and hands over `message`. `file_stem` names
    /// the file for the file transport.
    pub async fn send(&self, mut message: Message, file_stem: &str) -> Result<(), SendError> {
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        match &self.kind {
            Kind::Files(dir) => write_file(dir, file_stem, &message.formatted())
                .await
                .map_err(|e| SendError::Temporary(format!("cannot write the mail file: {e}"))),
            Kind::Smtp(smtp) => {
                let smtp = smtp.clone();
                match tokio::task::spawn_blocking(move || smtp.send(&message)).await {
                    Ok(sent) => classify(sent),
                    Err(e) => Err(SendError::Temporary(format!("the send task failed: {e}"))),
                }
            }
        }
    }
}

fn classify(
    sent: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
) -> Result<(), SendError> {
    match sent {
        Ok(_) => Ok(()),
        // A 5xx about authentication is Assent's configuration, not the
        // recipient: worth trying again once it is fixed.
        Err(e) if e.is_permanent() && !is_auth_failure(&e) => {
            Err(SendError::Permanent(e.to_string()))
        }
        Err(e) => Err(SendError::Temporary(e.to_string())),
    }
}

fn is_auth_failure(error: &lettre::transport::smtp::Error) -> bool {
    error
        .status()
        .is_some_and(|code| matches!(code.to_string().as_str(), "530" | "534" | "535" | "538"))
}

/// Writes the message under a temporary name, then renames it, so a reader
/// of the folder never sees half a message.
async fn write_file(dir: &Path, stem: &str, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".{stem}.eml.tmp"));
    let mut file = tokio::fs::File::create(&tmp).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
    file.sync_all().await?;
    tokio::fs::rename(&tmp, dir.join(format!("{stem}.eml"))).await
}

/// The headers DKIM signs. From and Subject are named once more than the
/// message has them (over-signed): a verifier then counts the missing second
/// one as empty, so a From or Subject added on the way, which some mail
/// programs would show instead, breaks the signature. (lettre signs the one
/// instance of a header however often it is named, which is exactly that.)
const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Auto-Submitted",
    "From",
    "Subject",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DkimSettings, EmailConfig};

    #[tokio::test]
    async fn file_mail_is_written_whole_and_dkim_signed_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("dkim.key");
        // An Ed25519 DKIM key: the base64 of its 32-byte seed.
        std::fs::write(&key_file, "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=\n").unwrap();
        let config = EmailConfig {
            dkim: Some(DkimSettings {
                selector: "assent".to_owned(),
                domain: "example.org".to_owned(),
                key_file,
                algorithm: DkimAlgorithm::Ed25519,
            }),
            ..EmailConfig::default()
        };
        let mailer = Mailer::new(&config, dir.path()).unwrap();
        let message = Message::builder()
            .from("A <a@example.org>".parse().unwrap())
            .to("b@example.org".parse().unwrap())
            .subject("s")
            .body("hello".to_owned())
            .unwrap();
        mailer.send(message, "req_1.initial.1").await.unwrap();
        let mail_dir = dir.path().join("mail");
        let names: Vec<_> = std::fs::read_dir(&mail_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["req_1.initial.1.eml"], "no temporary file left");
        let raw = std::fs::read_to_string(mail_dir.join(&names[0])).unwrap();
        // The header, unfolded.
        let signature: String = raw
            .split("\r\n")
            .skip_while(|l| !l.starts_with("DKIM-Signature:"))
            .enumerate()
            .take_while(|(i, l)| *i == 0 || l.starts_with([' ', '\t']))
            .map(|(_, l)| l.trim_start())
            .collect();
        assert!(!signature.is_empty(), "not signed:\n{raw}");
        for tag in [
            "a=ed25519-sha256",
            "d=example.org",
            "s=assent",
            "h=from:to:subject:date:message-id:mime-version:content-type:auto-submitted:from:subject;",
        ] {
            assert!(signature.contains(tag), "{signature}");
        }

        let bad_key = dir.path().join("bad.key");
        std::fs::write(&bad_key, "not a key").unwrap();
        let config = EmailConfig {
            dkim: Some(DkimSettings {
                selector: "assent".to_owned(),
                domain: "example.org".to_owned(),
                key_file: bad_key,
                algorithm: DkimAlgorithm::Rsa,
            }),
            ..EmailConfig::default()
        };
        let error = Mailer::new(&config, dir.path()).err().unwrap();
        assert_eq!(error.key, "email.dkim.key_file");
    }
}
