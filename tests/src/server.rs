//! The real `csp-server` process: started on free loopback ports, ready once it prints its
//! "csp-server ready" line, killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::pb::cspserve::v1::csp_service_client::CspServiceClient;
use crate::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient;

/// Loading and warming up the small test models takes well under a second; this bounds a
/// start on a busy 2-core machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
/// A port picked free can be taken by another process before the server binds it: retry then.
const START_ATTEMPTS: usize = 3;

/// The server's command line, less the addresses the harness picks.
#[derive(Clone, Debug)]
pub struct ServerBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// One compute and one decode thread: several servers share this machine's cores.
    pub fn new() -> Self {
        ServerBuilder { args: ["--threads", "1", "--decode-threads", "1"].map(String::from).to_vec(), envs: Vec::new() }
    }

    /// No arguments at all beyond the addresses the harness picks: for a start command taken as it
    /// is from elsewhere (tests/tests/e2e/docker_entrypoint.rs: the Dockerfile's).
    pub fn bare() -> Self {
        ServerBuilder { args: Vec::new(), envs: Vec::new() }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the server (the harness clears every inherited `CSP_*`).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.envs.push((key.to_owned(), value.into()));
        self
    }

    /// `--model NAME=FILE` (a native safetensors file carries its architecture).
    pub fn model(self, name: &str, weights: &Path) -> Self {
        self.args(["--model".to_string(), format!("{name}={}", weights.display())])
    }

    /// `--model NAME=ARCH@WEIGHTS`.
    pub fn model_with_arch(self, name: &str, arch: &Path, weights: &Path) -> Self {
        self.args(["--model".to_string(), format!("{name}={}@{}", arch.display(), weights.display())])
    }

    pub fn config(self, path: &Path) -> Self {
        self.args(["--config".to_string(), path.display().to_string()])
    }

    /// Starts the server and waits until it is ready. Panics with the server's output when it
    /// does not come up.
    pub fn start(self) -> Server {
        let bin = crate::workspace_binary("csp-server", "CSP_SERVER_BIN", "cargo build -p csp-server");
        let mut last_output = String::new();
        for _ in 0..START_ATTEMPTS {
            let (http, grpc) = (free_port(), free_port());
            match launch(&bin, &self, http, grpc) {
                Ok(server) => return server,
                Err(Launch::PortTaken(output)) => last_output = output,
                Err(Launch::Failed(message)) => panic!("{message}"),
            }
        }
        panic!("csp-server could not bind its ports in {START_ATTEMPTS} attempts:\n{last_output}");
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

enum Launch {
    PortTaken(String),
    Failed(String),
}

fn launch(bin: &Path, settings: &ServerBuilder, http: SocketAddr, grpc: SocketAddr) -> Result<Server, Launch> {
    let mut command = Command::new(bin);
    command
        .args(&settings.args)
        .arg("--http-addr")
        .arg(http.to_string())
        .arg("--grpc-addr")
        .arg(grpc.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG");
    // Settings from the environment running the tests must not leak into the server's.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CSP_") {
            command.env_remove(key);
        }
    }
    command.envs(settings.envs.iter().map(|(k, v)| (k, v)));
    let mut child = command.spawn().map_err(|e| Launch::Failed(format!("cannot start {}: {e}", bin.display())))?;
    let output = Arc::new(Mutex::new(String::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    collect(stdout, output.clone(), Some(ready_tx));
    collect(stderr, output.clone(), None);

    let started = Instant::now();
    let mut server = Server { child, http, grpc, output };
    loop {
        match ready_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let want = [format!("http={http}"), format!("grpc={grpc}")];
                if want.iter().all(|w| line.split_whitespace().any(|t| t == w)) {
                    return Ok(server);
                }
                return Err(Launch::Failed(format!("ready line names other addresses than {want:?}: {line}")));
            }
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            // Let the readers drain what the process wrote before it died.
            std::thread::sleep(Duration::from_millis(100));
            let output = server.output();
            if output.contains("Address already in use") {
                return Err(Launch::PortTaken(output));
            }
            return Err(Launch::Failed(format!("csp-server exited ({status}) before it was ready:\n{output}")));
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            return Err(Launch::Failed(format!(
                "csp-server was not ready after {STARTUP_TIMEOUT:?}:\n{}",
                server.output()
            )));
        }
    }
}

/// Copies a pipe into `output` line by line; the first "csp-server ready" line goes to `ready`.
fn collect(pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>, ready: Option<mpsc::Sender<String>>) {
    std::thread::spawn(move || {
        let mut ready = ready;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("csp-server ready") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(line.clone());
                }
            }
            let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
            out.push_str(&line);
            out.push('\n');
        }
    });
}

/// A running server. Dropping it kills the process.
pub struct Server {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl Server {
    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Everything the server printed so far (for failure messages).
    pub fn output(&self) -> String {
        self.output.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A fresh gRPC connection.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("valid endpoint")
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to gRPC {}: {e}", self.grpc))
    }

    pub async fn kserve(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    pub async fn csp(&self) -> CspServiceClient<Channel> {
        CspServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed: {}", std::io::Error::last_os_error());
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < end, "csp-server did not exit within {timeout:?}:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
