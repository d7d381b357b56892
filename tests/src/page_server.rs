//! A one-page web server on its own port: a different origin from Assent's,
//! as an identity server's site that embeds the consent page would be.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct PageServer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    /// Serves `html` for every request, on a port of its own.
    pub async fn start(html: String) -> PageServer {
        Self::start_on(0, html).await
    }

    /// Serves `html` on `port` (0: any free one).
    pub async fn start_on(port: u16, html: String) -> PageServer {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the page server");
        let port = listener.local_addr().expect("its address").port();
        let html = Arc::new(html);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let html = html.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        html.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(html.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        PageServer { port, task }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
