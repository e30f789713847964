//! A running gateway: the composition of the pieces.
//!
//! [`Server::start`] compiles the configuration into a
//! [`Snapshot`], starts the worker threads
//! ([`crate::runtime::Workers`]) serving the [`Gateway`] on it, and, when
//! backends are configured, the health thread
//! ([`crate::upstream::health`]), and the thread that sweeps idle
//! per-client buckets ([`ClientSweeper`], every 5 s). This is the only module that knows all of
//! them; the runtime knows nothing of the gateway, and the gateway nothing
//! of threads.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::admin::api::AdminApi;
use crate::admin::http::AdminServer;
use crate::config::Config;
use crate::control::{Control, ControlError, UsageFlusher, USAGE_FLUSH_INTERVAL};
use crate::gateway::limits::ClientSweeper;
use crate::gateway::{Gateway, GatewayOptions, OutcomeCounts, Snapshot};
use crate::observe::access_log::{AccessLog, LogTarget};
use crate::observe::metrics::Metrics;
use crate::runtime::{self, Counters, DriverKind, Loads, Settings, Shutdown, WorkerHook, Workers};
use crate::state::{StateError, Store};
use crate::tls::TlsAcceptor;

/// Options for [`Server::start`] beyond the configuration.
#[derive(Default, Clone)]
pub struct StartOptions {
    /// Run on each worker thread before its runtime starts.
    pub on_worker_start: Option<WorkerHook>,
    /// Debug builds only: honour the `x-ringgate-fault` request header,
    /// which panics on the request path (`panic`) or in a worker task
    /// (`kill-worker`), to test containment and the supervisor.
    #[cfg(debug_assertions)]
    pub fault_injection: bool,
    /// The file the configuration came from: what a reload reads.
    pub config_path: Option<PathBuf>,
    /// Keep the control-plane state in the state directory
    /// ([`Config::state_dir`]); otherwise in memory, for this process only.
    pub durable_state: bool,
    /// Serve the admin API on [`Config::admin_socket`] (and `[admin]
    /// listen`, if set).
    pub admin: bool,
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The state store could not be opened.
    State(StateError),
    /// The configuration (with the state) could not be compiled, or the
    /// health thread could not start.
    Control(ControlError),
    /// The workers could not start.
    Runtime(runtime::StartError),
    /// The admin socket could not be served.
    Admin(String),
    /// The thread that sweeps per-client buckets could not start.
    Sweeper(std::io::Error),
    /// The access log could not be opened.
    AccessLog(String),
    /// The TLS certificates could not be loaded.
    Tls(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::State(e) => write!(f, "{e}"),
            StartError::Control(e) => write!(f, "{e}"),
            StartError::Runtime(e) => write!(f, "{e}"),
            StartError::Admin(e) => write!(f, "{e}"),
            StartError::AccessLog(e) => write!(f, "{e}"),
            StartError::Tls(e) => write!(f, "{e}"),
            StartError::Sweeper(e) => write!(f, "cannot start the sweeper thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The admin socket and the TCP listener with its token.
type AdminEndpoints = (PathBuf, Option<(SocketAddr, String)>);

fn admin_endpoints(config: &Config) -> Result<AdminEndpoints, StartError> {
    let tcp = match (config.admin.listen, config.admin_token_file()) {
        (Some(addr), Some(file)) => {
            let token = std::fs::read_to_string(&file).map_err(|e| {
                StartError::Admin(format!(
                    "cannot read the admin token file {}: {e}",
                    file.display()
                ))
            })?;
            let token = token.trim().to_string();
            if token.len() < 16 {
                return Err(StartError::Admin(format!(
                    "the admin token in {} is shorter than 16 characters: write a long \
                     random one, e.g. `head -c 32 /dev/urandom | base64 > {}`",
                    file.display(),
                    file.display()
                )));
            }
            Some((addr, token))
        }
        _ => None,
    };
    Ok((config.admin_socket(), tcp))
}

/// A running gateway.
pub struct Server {
    workers: Workers<Gateway>,
    gateway: Arc<Gateway>,
    /// Deployments, stages, reloads; owns the health thread.
    control: Arc<Control>,
    /// The admin API's listeners.
    admin: Option<AdminServer>,
    /// Writes usage-plan counts to the store every second.
    flusher: UsageFlusher,
    /// Drops idle per-client buckets of the published snapshot.
    sweeper: ClientSweeper,
    /// Reloads the TLS certificates when their files change.
    tls_watcher: Option<crate::tls::Watcher>,
}

/// A cloneable handle that can stop the server from another thread.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shutdown>);

impl ShutdownHandle {
    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        self.0.trigger();
    }
}

impl Server {
    /// Opens the state, compiles `config` with it, binds the listeners and
    /// starts the workers.
    pub fn start(config: Config, options: StartOptions) -> Result<Server, StartError> {
        let (store, state) = if options.durable_state {
            Store::open(&config.state_dir())
        } else {
            Store::in_memory()
        }
        .map_err(StartError::State)?;
        let mut settings = Settings::from_config(&config);
        let listen_count = config.server.listen.len();
        let tls = match &config.tls {
            None => None,
            Some(t) => Some(Arc::new(TlsAcceptor::new(t).map_err(StartError::Tls)?)),
        };
        settings.tls = tls.clone();
        let limits = config.limits.clone();
        let health_path = config.server.health_path.clone();
        let metrics_enabled = config.metrics.enabled;
        let metrics_listen = config.metrics.listen;
        // The access log's file is opened before anything serves, so a
        // path that cannot be written fails the start.
        let access_log = match &config.access_log {
            None => None,
            Some(a) => {
                let target = a.path.clone().map_or(LogTarget::Stdout, LogTarget::File);
                Some(AccessLog::start(target.clone(), a.queue).map_err(|e| {
                    StartError::AccessLog(format!(
                        "cannot open the access log {target}: {e} (fix [access_log] path, or \
                         use \"-\" for standard output)"
                    ))
                })?)
            }
        };
        let admin_at = options
            .admin
            .then(|| admin_endpoints(&config))
            .transpose()?;
        let (control, _) = Control::start(config, options.config_path.clone(), store, state)
            .map_err(StartError::Control)?;
        let control = Arc::new(control);
        let metrics = Arc::new(Metrics::new(settings.workers, metrics_enabled));
        control.published().attach_metrics(metrics);
        let flusher = UsageFlusher::start(control.clone(), USAGE_FLUSH_INTERVAL)
            .map_err(|e| StartError::Admin(format!("cannot start the usage flusher: {e}")))?;
        let sweeper =
            ClientSweeper::start(control.published().clone()).map_err(StartError::Sweeper)?;
        let gateway = Arc::new(Gateway::new(
            control.published().clone(),
            &limits,
            settings.workers,
            GatewayOptions {
                #[cfg(debug_assertions)]
                fault_injection: options.fault_injection,
                health_path,
                access_log,
                tls,
            },
        ));
        let workers = Workers::start(settings, gateway.clone(), options.on_worker_start)
            .map_err(StartError::Runtime)?;
        let admin = match admin_at {
            None => None,
            Some((socket, tcp)) => {
                let api = AdminApi::new(control.clone(), Some(workers.loads())).with_metrics(
                    crate::admin::metrics::MetricsSources {
                        gateway: gateway.clone(),
                        counters: workers.counters(),
                        drivers: workers
                            .drivers()
                            .iter()
                            .map(|d| match d {
                                DriverKind::IoUring => "io_uring",
                                DriverKind::Epoll => "epoll",
                            })
                            .collect(),
                    },
                );
                let options = crate::admin::http::Options {
                    metrics_listen,
                    ..Default::default()
                };
                match AdminServer::start_with(&socket, tcp, Arc::new(api), options) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        workers.shutdown();
                        workers.join();
                        return Err(StartError::Admin(format!(
                            "cannot serve the admin socket {}: {e}",
                            socket.display()
                        )));
                    }
                }
            }
        };
        if let (Some(tls), Some(addr)) = (gateway.tls(), workers.local_addrs().get(listen_count)) {
            tls.set_https_port(addr.port());
        }
        let tls_watcher = match gateway.tls() {
            Some(tls) => crate::tls::Watcher::start(tls.clone()).map_err(|e| {
                StartError::Tls(format!("cannot start the certificate watcher: {e}"))
            })?,
            None => None,
        };
        Ok(Server {
            workers,
            gateway,
            control,
            admin,
            flusher,
            sweeper,
            tls_watcher,
        })
    }

    /// The admin socket's path, when the admin API is served.
    pub fn admin_socket(&self) -> Option<&std::path::Path> {
        self.admin.as_ref().map(|a| a.socket_path())
    }

    /// The TCP admin listener's address, when one is configured.
    pub fn admin_tcp_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.tcp_addr())
    }

    /// The access log's writer, when `[access_log]` is set (to reopen it
    /// after a rotation, or read its counters).
    pub fn access_log(&self) -> Option<Arc<AccessLog>> {
        self.gateway.access_log().cloned()
    }

    /// The TLS listeners' certificates (to reload them), when
    /// `server.listen_tls` is set.
    pub fn tls(&self) -> Option<Arc<TlsAcceptor>> {
        self.gateway.tls().cloned()
    }

    /// The scrape listener's address (`[metrics] listen`), if it serves.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.metrics_addr())
    }

    /// The control side: deployments, stages, canaries, reloads.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The bound addresses, in the order of `server.listen`, then those of
    /// `server.listen_tls`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.workers.local_addrs()
    }

    /// What containment caught: connections closed by a panic, workers
    /// restarted, workers running now.
    pub fn counters(&self) -> Arc<Counters> {
        self.workers.counters()
    }

    /// Requests answered so far, by outcome.
    pub fn outcomes(&self) -> OutcomeCounts {
        self.gateway.outcomes()
    }

    /// The snapshot being served now (stage caches, upstreams and their
    /// counters are reachable from it).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.gateway.snapshot()
    }

    /// The driver each worker runs.
    pub fn drivers(&self) -> &[DriverKind] {
        self.workers.drivers()
    }

    /// Each worker's load (open connections, pooled buffers and blocks),
    /// readable from any thread.
    pub fn loads(&self) -> Loads {
        self.workers.loads()
    }

    /// A handle that can start the shutdown from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.workers.shutdown_signal())
    }

    /// Starts a graceful shutdown: each worker stops accepting, closes its
    /// idle connections, lets requests in flight finish, and ends when its
    /// last connection closes or `drain_timeout` passes.
    pub fn shutdown(&self) {
        self.workers.shutdown();
    }

    /// Waits for every worker to finish (the health thread stops when the
    /// last holder of the control side lets it go).
    pub fn join(mut self) {
        self.workers.join();
        // The workers shipped their last lines as they stopped.
        if let Some(log) = self.gateway.access_log() {
            log.stop();
        }
        // The last requests' usage reaches the store.
        self.flusher.stop();
        self.sweeper.stop();
        if let Some(mut w) = self.tls_watcher.take() {
            w.stop();
        }
        if let Some(a) = self.admin {
            a.stop();
        }
    }
}
