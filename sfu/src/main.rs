use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use edgemeet_sfu::{config, heartbeat, router, AppState};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: the engine's worker threads allocate and free small
/// buffers (rtc's per-packet messages), and glibc's per-thread arenas grew and shrank their heaps
/// under that pattern (an `mprotect` and page faults every few packets, ~6 % of the SFU's CPU at
/// 1x100 in `cargo xtask load`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Longest wait for our rooms to move away after SIGTERM.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The exit status after a panic (EX_SOFTWARE): a supervisor restarts the SFU.
const FAILED_EXIT: i32 = 70;
/// …and when the drain after a panic did not end in time (the process is ended from a thread).
const FORCED_EXIT: i32 = 71;
/// While draining, rooms still here are named to the edge again this often.
const DRAIN_NOTICE_AGAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// webrtc-rs's crates warn once per datagram they cannot read (ICE, DTLS, SRTP): anyone who can
/// send junk to a media port could fill the disk and burn CPU on logging. Their errors still show.
const DEFAULT_LOG: &str =
    "info,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_srtp=error,rtc_sctp=error,rtc_rtp=error,rtc_rtcp=error";

/// Each media session holds two sockets (`udp_batch::bind_split`): at full capacity, with
/// connection checks, that passes the usual soft limit of 1,024 open files. Raised to the hard
/// limit, which a supervisor sets.
fn raise_open_files_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            let want = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                tracing::warn!(
                    soft = l.rlim_cur,
                    hard = l.rlim_max,
                    "could not raise the open files limit"
                );
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter =
        EnvFilter::try_from_env("EDGEMEET_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if std::env::var("EDGEMEET_LOG_FORMAT").as_deref() == Ok("json") {
        fmt.json().init();
    } else {
        fmt.init();
    }

    let config = match config::load(config::Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgemeet-sfu: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("edgemeet-sfu: cannot listen on {}: {e}", config.listen);
            return ExitCode::from(1);
        }
    };
    raise_open_files_limit();
    tracing::info!(id = %config.id, region = %config.region, listen = %config.listen, public_url = %config.public_url,
        edge = config.edge_url.as_deref().unwrap_or("-"), "SFU starting");
    let state = AppState::new(config);
    // A panic anywhere (a task's) leaves whatever it held broken — poisoned locks, half-made state
    // — while everything else runs on: this SFU would look healthy and fail calls. Instead it
    // reports itself failed (`/healthz` 503, draining heartbeats: out of the registry), asks the
    // edge to move its rooms, and exits — at the latest after the drain time, whatever state the
    // drain finds.
    {
        let hook_state = Arc::downgrade(&state);
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            let Some(s) = hook_state.upgrade() else {
                return;
            };
            if !s.is_failed() {
                tracing::error!(panic = %info, "a task panicked: this SFU reports itself failed, drains and exits");
                std::thread::spawn(|| {
                    std::thread::sleep(DRAIN_TIMEOUT + std::time::Duration::from_secs(5));
                    std::process::exit(FORCED_EXIT);
                });
            }
            s.fail();
        }));
    }
    let beats = tokio::spawn(heartbeat::run(state.clone()));

    let shutdown_state = state.clone();
    let shutdown = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
            _ = shutdown_state.stop.notified() => tracing::error!("failed: draining"),
        }
        shutdown_state.set_draining();
        // Tell the edge at once, so no new room lands here while we go, and have our rooms move
        // to another SFU before we exit: a deploy drops no call.
        if let Some(edge) = &shutdown_state.config.edge_url {
            let client = reqwest::Client::new();
            if let Err(e) = heartbeat::send(&client, edge, &shutdown_state, 0.0).await {
                tracing::warn!(error = %e, "could not tell the edge we are draining");
            }
            let rooms = shutdown_state.media.room_names().len();
            if rooms > 0 {
                // Ask the edge to move our rooms, and ask again every few seconds for rooms still
                // here (a notice that was lost or refused must not leave a call behind).
                let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
                let mut next_notice = std::time::Instant::now();
                while shutdown_state.media.participant_count() > 0
                    && std::time::Instant::now() < deadline
                {
                    if std::time::Instant::now() >= next_notice {
                        let rooms = shutdown_state.media.room_names().len();
                        match heartbeat::announce_draining(&client, edge, &shutdown_state).await {
                            Ok(()) => tracing::info!(rooms, "asked the edge to move our rooms"),
                            Err(e) => {
                                tracing::warn!(error = %e, "could not ask the edge to move our rooms")
                            }
                        }
                        next_notice = std::time::Instant::now() + DRAIN_NOTICE_AGAIN;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                tracing::info!(left = shutdown_state.media.participant_count(), "drained");
            }
        }
    };
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    beats.abort();
    if state.is_failed() {
        // Closing sessions would take the locks the panic may have poisoned.
        tracing::error!("SFU stopped after a panic");
        return ExitCode::from(FAILED_EXIT as u8);
    }
    state.media.close_all().await;
    match served {
        Ok(()) => {
            tracing::info!("SFU stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server error");
            ExitCode::from(1)
        }
    }
}
