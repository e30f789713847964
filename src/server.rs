//! A running gateway: the composition of the pieces.
//!
//! [`Server::start`] compiles the configuration into a
//! [`Snapshot`](crate::gateway::Snapshot), starts the worker threads
//! ([`crate::runtime::Workers`]) serving the [`Gateway`] on it, and, when
//! backends are configured, the health thread
//! ([`crate::upstream::health`]). This is the only module that knows all of
//! them; the runtime knows nothing of the gateway, and the gateway nothing
//! of threads.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::gateway::{BuildError, Gateway, GatewayOptions, OutcomeCounts, Snapshot};
use crate::runtime::{self, Counters, DriverKind, Loads, Settings, Shutdown, WorkerHook, Workers};
use crate::upstream::health::Checker;

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
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration could not be compiled.
    Build(BuildError),
    /// The workers could not start.
    Runtime(runtime::StartError),
    /// The health thread could not be spawned.
    Health(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Build(e) => write!(f, "{e}"),
            StartError::Runtime(e) => write!(f, "{e}"),
            StartError::Health(e) => write!(f, "cannot start the health thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running gateway.
pub struct Server {
    workers: Workers<Gateway>,
    gateway: Arc<Gateway>,
    /// Active health checks and name refresh for the backends.
    health: Option<Checker>,
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
    /// Compiles `config`, binds its listeners and starts the workers.
    pub fn start(config: Config, options: StartOptions) -> Result<Server, StartError> {
        let snapshot = Arc::new(Snapshot::build(&config).map_err(StartError::Build)?);
        let settings = Settings::from_config(&config);
        let gateway = Arc::new(Gateway::new(
            snapshot.clone(),
            &config.limits,
            settings.workers,
            GatewayOptions {
                #[cfg(debug_assertions)]
                fault_injection: options.fault_injection,
            },
        ));
        let workers = Workers::start(settings, gateway.clone(), options.on_worker_start)
            .map_err(StartError::Runtime)?;
        let health = if snapshot.upstreams.targets.is_empty() {
            None
        } else {
            match Checker::start(snapshot.upstreams.clone()) {
                Ok(c) => Some(c),
                Err(e) => {
                    workers.shutdown();
                    workers.join();
                    return Err(StartError::Health(e));
                }
            }
        };
        Ok(Server {
            workers,
            gateway,
            health,
        })
    }

    /// The bound addresses, in the order of `server.listen`.
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

    /// Waits for every worker to finish, then stops the health thread.
    pub fn join(mut self) {
        let health = self.health.take();
        self.workers.join();
        if let Some(mut h) = health {
            h.stop();
        }
    }
}
