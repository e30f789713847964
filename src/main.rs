//! The `ringgate` command: `serve` (the default), `check`, `admin`,
//! `import openapi`, `export openapi`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use ringgate::config;
use ringgate::server::{Server, StartOptions};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const DEFAULT_CONFIG: &str = "config/ringgate.toml";

/// ringgate: a self-hosted API gateway (routes, stages, mock and proxy
/// integrations) on io_uring, one pinned worker per core.
#[derive(Parser)]
#[command(name = "ringgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file, when no subcommand is given (same as `serve --config`).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default when no subcommand is given).
    Serve {
        /// Configuration file.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration and print a summary of its APIs, stages and routes.
    Check {
        /// Configuration file.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Talk to a running gateway over its admin socket: deployments,
    /// stages, canaries, caches, API keys, usage plans, usage, reload,
    /// status.
    Admin(Box<ringgate::admin::cli::AdminArgs>),
    /// Convert another gateway's definition into a ringgate configuration.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write an API of a configuration in another gateway's format.
    #[command(subcommand)]
    Export(ExportCommand),
}

#[derive(Subcommand)]
enum ImportCommand {
    /// An Amazon API Gateway OpenAPI export (OpenAPI 3.0 or Swagger 2.0,
    /// JSON or YAML) → a ringgate configuration, with a summary of what was
    /// imported, approximated and left out.
    Openapi(ringgate::openapi::cli::ImportArgs),
}

#[derive(Subcommand)]
enum ExportCommand {
    /// An API of the configuration → OpenAPI 3.0.1 with API Gateway's
    /// extensions (a deployment: `ringgate admin deployments export`).
    Openapi(ringgate::openapi::cli::ExportArgs),
}

fn main() -> ExitCode {
    // Before anything is allocated: see the function's docs for why.
    if let Err(e) = ringgate::runtime::disable_transparent_huge_pages() {
        eprintln!("ringgate: warning: cannot turn transparent huge pages off: {e}");
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Admin(mut args)) => {
            // `ringgate --config FILE admin ...` names the gateway too.
            if args.socket.is_none() && args.url.is_none() && args.config.is_none() {
                args.config = cli.config;
            }
            ExitCode::from(ringgate::admin::cli::run(&args))
        }
        Some(Command::Check { config }) => check(&config),
        Some(Command::Import(ImportCommand::Openapi(args))) => {
            ExitCode::from(ringgate::openapi::cli::run_import(&args))
        }
        Some(Command::Export(ExportCommand::Openapi(args))) => {
            ExitCode::from(ringgate::openapi::cli::run_export(&args))
        }
        Some(Command::Serve { config }) => serve(&config),
        None => serve(&cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let snapshot = match ringgate::gateway::Snapshot::build(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    for w in &cfg.warnings {
        eprintln!("{w}");
    }
    for (api, route, why) in snapshot.problems() {
        eprintln!("warning: api {api:?}, route {route:?}: {why}; it answers 500 until fixed");
    }
    println!("{}: OK", path.display());
    let listen: Vec<String> = cfg.server.listen.iter().map(|a| a.to_string()).collect();
    println!(
        "listen: {}; workers: {}",
        listen.join(", "),
        cfg.server
            .workers
            .map_or_else(|| "auto".to_string(), |n| n.to_string())
    );
    if let Some(tls) = &cfg.tls {
        let addrs: Vec<String> = cfg
            .server
            .listen_tls
            .iter()
            .map(|a| a.to_string())
            .collect();
        println!(
            "listen_tls: {}; TLS {} and up; {} certificate(s)",
            addrs.join(", "),
            match tls.min_version {
                config::TlsVersion::Tls12 => "1.2",
                config::TlsVersion::Tls13 => "1.3",
            },
            tls.certificates.len()
        );
    }
    for (api, api_cfg) in snapshot.apis().zip(&cfg.apis) {
        let hosts = if api_cfg.hosts.is_empty() {
            "any host".to_string()
        } else {
            api_cfg.hosts.join(", ")
        };
        println!("api {} ({hosts})", api.name);
        let stages: Vec<String> = api_cfg
            .stages
            .iter()
            .map(|s| {
                if s.auto_deploy {
                    s.name.clone()
                } else {
                    format!("{} (pinned: serves its deployment from the state)", s.name)
                }
            })
            .collect();
        println!("  stages: {}", stages.join(", "));
        println!("  routes:");
        for r in api.route_names() {
            println!("    {r}");
        }
    }
    for u in &cfg.upstreams {
        let targets: Vec<&str> = u.targets.iter().map(|t| t.text.as_str()).collect();
        let health = match (&u.passive_health, &u.health_check) {
            (Some(_), Some(_)) => ", passive + active health",
            (Some(_), None) => ", passive health",
            (None, Some(_)) => ", active health",
            (None, None) => "",
        };
        println!(
            "upstream {} ({:?}{health}): {}",
            u.name,
            u.balance,
            targets.join(", ")
        );
    }
    for api in &cfg.apis {
        for stage in &api.stages {
            if let Some(c) = stage.cache.as_ref().filter(|c| c.enabled) {
                let size = c.capacity_class.as_ref().map_or_else(
                    || format!("{} bytes", c.capacity_bytes),
                    |g| format!("{g} GB"),
                );
                println!(
                    "cache api {} stage {}: {size}, ttl {:?}",
                    api.name, stage.name, c.ttl
                );
            }
        }
    }
    for d in &cfg.domains {
        println!("domain {}", d.host);
        for m in &d.mappings {
            let bp = if m.base_path.is_empty() {
                "(none)"
            } else {
                &m.base_path
            };
            println!("  /{bp} -> {} stage {}", m.api, m.stage);
        }
    }
    if cfg.apis.is_empty() {
        println!("warning: no [[api]] is defined; every request will get 403");
    }
    ExitCode::SUCCESS
}

fn serve(path: &std::path::Path) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if cfg.apis.is_empty() {
        eprintln!(
            "ringgate: warning: {} defines no [[api]]; every request will get 403",
            path.display()
        );
    }
    // Signals are routed to this thread before any worker exists.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringgate: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let drain = cfg.server.drain_timeout;
    let cfg_listen_count = cfg.server.listen.len();
    #[allow(unused_mut)]
    let mut options = StartOptions {
        config_path: Some(path.to_path_buf()),
        durable_state: true,
        admin: true,
        ..StartOptions::default()
    };
    #[cfg(debug_assertions)]
    {
        // Debug builds only, for the containment tests.
        options.fault_injection = std::env::var_os("RINGGATE_FAULT_INJECTION").is_some();
    }
    let server = match Server::start(cfg, options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringgate: {e}");
            return ExitCode::from(1);
        }
    };
    let plain = cfg_listen_count;
    for (i, addr) in server.local_addrs().iter().enumerate() {
        println!(
            "ringgate {}: listening on {addr} ({}{} worker(s))",
            env!("CARGO_PKG_VERSION"),
            if i < plain { "" } else { "TLS, " },
            server.drivers().len()
        );
    }
    for (api, route, why) in server.snapshot().problems() {
        eprintln!(
            "ringgate: warning: api {api:?}, route {route:?}: {why}; it answers 500 until fixed"
        );
    }
    if let Some(socket) = server.admin_socket() {
        println!("ringgate: admin socket {}", socket.display());
    }
    if let Some(addr) = server.metrics_addr() {
        println!("ringgate: metrics listener http://{addr}/metrics");
    }
    if let Some(addr) = server.admin_tcp_addr() {
        println!("ringgate: admin listener {addr} (bearer token required)");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();

    // One queue for what can end the process: a signal, or the server
    // stopping by itself (a worker that could not be kept running).
    enum Event {
        Signal(i32),
        Stopped,
    }
    let (events, next) = std::sync::mpsc::channel();
    let handle = server.shutdown_handle();
    let loads = server.loads();
    let access_log = server.access_log();
    let tls = server.tls();
    let control = server.control().clone();
    let usage_control = control.clone();
    {
        let events = events.clone();
        std::thread::spawn(move || {
            server.join();
            let _ = events.send(Event::Stopped);
        });
    }
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP {
                // Reload, as `ringgate admin reload` does.
                match control.reload() {
                    Ok(report) => {
                        for w in &report.warnings {
                            eprintln!("{w}");
                        }
                        for r in &report.restart_required {
                            eprintln!(
                                "ringgate: reload: {r} changed; it applies at the next start"
                            );
                        }
                        for p in &report.pinned_differences {
                            eprintln!("ringgate: reload: {p}");
                        }
                        eprintln!("ringgate: reloaded");
                    }
                    Err(e) => {
                        eprintln!("ringgate: reload refused, the running configuration stays: {e}")
                    }
                }
                // And the TLS certificates, read from their files again.
                if let Some(tls) = &tls {
                    match tls.reload() {
                        Ok(n) => eprintln!("ringgate: TLS: {n} certificate(s) reloaded"),
                        Err(e) => eprintln!(
                            "ringgate: TLS: certificates not reloaded, the served ones stay: {e}"
                        ),
                    }
                }
                continue;
            }
            if signal == SIGUSR1 {
                // logrotate's postrotate: the access log is reopened at
                // its path (lines already queued go to the new file).
                if let Some(log) = &access_log {
                    log.reopen();
                    eprintln!("ringgate: access log {} reopened", log.target());
                }
                // And a status line per worker, on demand.
                for (id, l) in loads.read().iter().enumerate() {
                    eprintln!(
                        "ringgate: status: worker {id}: {} connections open, \
                         {} pooled buffers ({} allocated), {} free blocks ({} allocated), \
                         {} parks",
                        l.connections,
                        l.pooled_buffers,
                        l.buffers_allocated,
                        l.free_blocks,
                        l.blocks_allocated,
                        l.parked
                    );
                }
                continue;
            }
            if events.send(Event::Signal(signal)).is_err() {
                return;
            }
        }
    });
    match next.recv() {
        Ok(Event::Signal(signal)) => {
            eprintln!("ringgate: signal {signal}: draining (at most {drain:?})");
            handle.shutdown();
        }
        Ok(Event::Stopped) | Err(_) => {
            eprintln!("ringgate: stopped without a signal (see above); exiting");
            return ExitCode::from(1);
        }
    }
    // A second signal, or the drain timeout plus a grace second, ends it.
    let ended = next.recv_timeout(drain + Duration::from_secs(1));
    // Usage counted since the last flush reaches the store whichever way
    // the process ends (the server's own stop flushes too; this covers a
    // drain that did not finish).
    if let Err(e) = usage_control.flush_usage() {
        eprintln!("ringgate: cannot store the last usage counts: {e}");
    }
    match ended {
        Ok(Event::Stopped) => {
            eprintln!("ringgate: stopped");
            ExitCode::SUCCESS
        }
        Ok(Event::Signal(_)) => {
            eprintln!("ringgate: second signal: exiting now");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("ringgate: workers did not stop within the drain timeout; exiting");
            ExitCode::from(1)
        }
    }
}
