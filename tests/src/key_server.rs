//! The test homeserver's keys over HTTPS (a self-signed certificate made by
//! `openssl`), as an identity server fetches them to check a signature:
//! `GET /_matrix/key/v2/server` on `127.0.0.1:<port>`, a valid Matrix server
//! name, so no discovery or hosts file is needed.

use crate::homeserver::Homeserver;
use std::process::Command;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A self-signed certificate for `name` (and `also`, as DNS names) made by
/// `openssl` in `dir`: the certificate's and the key's PEM files.
pub fn self_signed_certificate(
    dir: &std::path::Path,
    name: &str,
    also: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut command = Command::new("openssl");
    command
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")]);
    if !also.is_empty() {
        let names: Vec<String> = also.iter().map(|n| format!("DNS:{n}")).collect();
        command.args(["-addext", &format!("subjectAltName={}", names.join(","))]);
    }
    let made = command
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// A test certificate authority and a server certificate it issued for
/// the DNS name `name`, made by `openssl` in `dir`: the CA's certificate
/// (what clients trust), and the server's certificate and key PEM files.
pub fn certificate_from_test_ca(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (cert, key, request) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("server.csr"),
    );
    let extensions = dir.join("server.ext");
    std::fs::write(
        &extensions,
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{name}\n"
        ),
    )
    .expect("write the extensions");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<std::ffi::OsString>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=Assent test CA", "-keyout"],
        ]
        .concat()
        .into_iter()
        .map(Into::into)
        .chain([ca_key.clone().into(), "-out".into(), ca.clone().into()])
        .collect(),
        [
            &["req"][..],
            &ec,
            &["-subj", &format!("/CN={name}"), "-keyout"],
        ]
        .concat()
        .into_iter()
        .map(Into::into)
        .chain([key.clone().into(), "-out".into(), request.clone().into()])
        .collect(),
        ["x509", "-req", "-days", "2", "-set_serial", "2", "-in"]
            .into_iter()
            .map(Into::into)
            .chain([
                request.into(),
                "-CA".into(),
                ca.clone().into(),
                "-CAkey".into(),
                ca_key.into(),
                "-extfile".into(),
                extensions.into(),
                "-out".into(),
                cert.clone().into(),
            ])
            .collect(),
    ];
    for args in steps {
        let made = Command::new("openssl")
            .args(&args)
            .output()
            .expect("run openssl");
        assert!(
            made.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    (ca, cert, key)
}

pub struct KeyServer {
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl KeyServer {
    /// A port to name the homeserver by before it serves (`127.0.0.1:<port>`).
    pub async fn reserve() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the key server")
    }

    /// Serves `hs`'s key document over TLS on `listener`.
    pub fn start(listener: tokio::net::TcpListener, hs: &Homeserver) -> KeyServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = self_signed_certificate(dir.path(), "127.0.0.1", &[]);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .expect("read the certificate")
            .collect::<Result<_, _>>()
            .expect("a certificate");
        let key = PrivateKeyDer::from_pem_file(&key).expect("the private key");
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("a TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let document = Arc::new(hs.key_document());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, document) = (acceptor.clone(), document.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request);
                    let (status, body) = if head.starts_with("GET /_matrix/key/v2/server") {
                        ("200 OK", document.as_str())
                    } else {
                        ("404 Not Found", "{\"errcode\":\"M_NOT_FOUND\"}")
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        KeyServer { task, _dir: dir }
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
