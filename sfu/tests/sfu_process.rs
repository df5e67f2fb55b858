//! Starts the real SFU binary against a fake edge and checks its HTTP surface and heartbeats.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use edgemeet_shared::control;
use edgemeet_shared::region::SfuHeartbeat;

const SECRET: &str = "integration-secret-integration-secret";

type Beats = Arc<Mutex<Vec<SfuHeartbeat>>>;

async fn fake_edge() -> (SocketAddr, Beats) {
    let beats: Beats = Arc::default();
    async fn beat(State(b): State<Beats>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let sig = headers
            .get(control::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        if control::verify(
            SECRET.as_bytes(),
            sig,
            "POST",
            "/api/sfu/heartbeat",
            &body,
            now,
        )
        .is_err()
        {
            return StatusCode::UNAUTHORIZED;
        }
        b.lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        StatusCode::NO_CONTENT
    }
    let app = Router::new()
        .route("/api/sfu/heartbeat", post(beat))
        .with_state(beats.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, beats)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sfu(Child);
impl Drop for Sfu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sfu(port: u16, edge: SocketAddr) -> Sfu {
    let child = Command::new(env!("CARGO_BIN_EXE_edgemeet-sfu"))
        .args([
            "--id",
            "eu-west",
            "--region",
            "eu-west",
            "--latitude",
            "50.11",
            "--longitude",
            "8.68",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--edge-url",
            &format!("http://{edge}"),
        ])
        .env("EDGEMEET_SFU_CONTROL_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start SFU binary");
    Sfu(child)
}

async fn get_json(url: String) -> Option<serde_json::Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

async fn get_text(url: String) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// Polls `f` until it returns Some or the deadline passes.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sfu_serves_health_and_metrics_and_heartbeats_signed() {
    let (edge, beats) = fake_edge().await;
    let port = free_port();
    let mut sfu = start_sfu(port, edge);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let health: serde_json::Value = eventually("healthz", Duration::from_secs(20), || {
        get_json(format!("{base}/healthz"))
    })
    .await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["region"], "eu-west");

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("edgemeet_sfu_participants"), "{metrics}");
    assert!(metrics.contains("edgemeet_sfu_build_info{"), "{metrics}");

    let missing = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let err: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(err["code"], "not_found");

    // Two signed heartbeats reach the edge (so it is a loop, not a one-off), with our identity.
    eventually("two heartbeats", Duration::from_secs(10), || {
        let enough = beats.lock().unwrap().len() >= 2;
        async move { enough.then_some(()) }
    })
    .await;
    let hb = beats.lock().unwrap()[0].clone();
    assert_eq!(hb.id, "eu-west");
    assert_eq!(hb.url, base);
    assert!((hb.location.lat - 50.11).abs() < 1e-9);
    assert!(!hb.draining);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edgemeet_sfu_heartbeats_total{result=\"ok\"}"),
        "{metrics}"
    );

    // SIGTERM: the SFU tells the edge it is draining, then exits cleanly.
    let n = beats.lock().unwrap().len();
    let status = Command::new("kill")
        .args(["-TERM", &sfu.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("draining heartbeat", Duration::from_secs(5), || {
        let seen = beats.lock().unwrap()[n..].iter().any(|b| b.draining);
        async move { seen.then_some(()) }
    })
    .await;
    let code = eventually("exit", Duration::from_secs(5), || {
        let exited = sfu.0.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(code.success(), "{code:?}");
}

#[tokio::test]
async fn bad_configuration_exits_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgemeet-sfu"))
        .args([
            "--id",
            "x",
            "--region",
            "x",
            "--latitude",
            "95",
            "--longitude",
            "0",
        ])
        .env("EDGEMEET_SFU_CONTROL_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("latitude 95 is outside -90..90"), "{err}");
}

#[tokio::test]
async fn heartbeats_with_a_wrong_secret_are_refused_by_the_edge() {
    // The fake edge verifies like the real one: a wrong secret never lands a heartbeat.
    let (edge, beats) = fake_edge().await;
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_edgemeet-sfu"))
        .args([
            "--id",
            "rogue",
            "--region",
            "x",
            "--latitude",
            "0",
            "--longitude",
            "0",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--edge-url",
            &format!("http://{edge}"),
        ])
        .env(
            "EDGEMEET_SFU_CONTROL_SECRET",
            "a-different-secret-a-different-secret",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _sfu = Sfu(child);
    let metrics = eventually(
        "a failed heartbeat",
        Duration::from_secs(20),
        || async move {
            let m = get_text(format!("http://127.0.0.1:{port}/metrics")).await?;
            m.contains("edgemeet_sfu_heartbeats_total{result=\"error\"}")
                .then_some(m)
        },
    )
    .await;
    assert!(!metrics.contains("result=\"ok\""), "{metrics}");
    assert!(beats.lock().unwrap().is_empty());
}
