//! Component stdout/stderr: appended to `<state-dir>/logs/<component>_{stdout,stderr}.txt`
//! (where Spin writes them) and echoed to the dev host's terminal, prefixed by component id.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The two log files of one component.
pub struct ComponentLog {
    stdout: Sink,
    stderr: Sink,
}

/// One output destination shared by every instance of a component.
#[derive(Clone)]
pub struct Sink {
    file: Arc<Mutex<File>>,
    prefix: Arc<str>,
}

impl ComponentLog {
    /// Opens (appending) the component's log files.
    pub fn open(dir: &Path, component: &str) -> Result<Self> {
        let open = |suffix: &str| -> Result<Sink> {
            let path = dir.join(format!("{component}_{suffix}.txt"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            Ok(Sink { file: Arc::new(Mutex::new(file)), prefix: format!("[{component}] ").into() })
        };
        Ok(ComponentLog { stdout: open("stdout")?, stderr: open("stderr")? })
    }

    /// A stream for the guest's stdout.
    pub fn stdout(&self) -> Sink {
        self.stdout.clone()
    }

    /// A stream for the guest's stderr.
    pub fn stderr(&self) -> Sink {
        self.stderr.clone()
    }

    /// Writes a host-side message into the component's stderr log.
    pub fn write_stderr(&self, message: &str) {
        self.stderr.write_all(message.as_bytes());
    }
}

impl Sink {
    fn write_all(&self, buf: &[u8]) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(buf);
        }
        // Echo line by line so concurrent instances don't interleave mid-line on the terminal.
        let text = String::from_utf8_lossy(buf);
        let mut terminal = std::io::stderr().lock();
        for line in text.lines() {
            let _ = writeln!(terminal, "{}{line}", self.prefix);
        }
    }
}

impl IsTerminal for Sink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Sink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter { sink: self.clone(), partial: Vec::new() })
    }
}

/// One instance's output stream: whole lines go out together (a guest's `println!` may arrive
/// in several writes), so lines of concurrent instances never interleave mid-line.
struct LineWriter {
    sink: Sink,
    partial: Vec<u8>,
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            self.sink.write_all(&self.partial);
        }
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        // Log writes are small and local; doing them inline keeps ordering simple.
        self.partial.extend_from_slice(buf);
        if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
            let rest = self.partial.split_off(end + 1);
            let lines = std::mem::replace(&mut self.partial, rest);
            self.sink.write_all(&lines);
        } else if self.partial.len() > 64 * 1024 {
            // A very long line without a newline: don't hold it forever.
            let lines = std::mem::take(&mut self.partial);
            self.sink.write_all(&lines);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
