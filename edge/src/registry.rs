//! The SFU registry Durable Object (one, named "global"): keeps the latest heartbeat of each SFU.
//! A thin shell over `edgemeet_shared::region::Registry`.
//!
//! State is kept in memory only: SFUs heartbeat every 2 s, so an evicted registry is whole again
//! within one interval, and a registry that was evicted had heard nothing for a long time anyway.

use std::cell::RefCell;

use edgemeet_shared::region::{GeoPoint, Registry, SfuHeartbeat, Suspension};
use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use crate::error::EdgeError;

pub const BINDING: &str = "SFU_REGISTRY";
pub const NAME: &str = "global";

/// Body of the registry's `POST /choose`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChooseRequest {
    pub room: String,
    pub location: Option<GeoPoint>,
}

/// Body of `/replace`: a room's SFU `dead` failed; which SFU takes the room (never one in
/// `exclude`: SFUs the room found gone or draining)?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplaceRequest {
    pub room: String,
    pub dead: String,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Body of `/suspend`: `sfu` failed a room's call or probe (`draining: false`), or announced it is
/// draining: no new room goes there until it is heard from again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuspendRequest {
    pub sfu: String,
    pub draining: bool,
}

#[durable_object(fetch)]
pub struct SfuRegistry {
    registry: RefCell<Registry>,
}

impl DurableObject for SfuRegistry {
    fn new(_state: State, _env: Env) -> Self {
        SfuRegistry {
            registry: RefCell::new(Registry::new()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let now = worker::Date::now().as_millis();
        match (req.method(), req.path().as_str()) {
            (Method::Post, "/heartbeat") => {
                let hb: SfuHeartbeat = match req.json().await {
                    Ok(hb) => hb,
                    Err(e) => {
                        return Ok(EdgeError::BadRequest(format!(
                            "heartbeat is not valid JSON: {e}"
                        ))
                        .into_response())
                    }
                };
                let id = hb.id.clone();
                let was_known = self
                    .registry
                    .borrow()
                    .status(now)
                    .iter()
                    .any(|s| s.heartbeat.id == id && s.healthy);
                match self.registry.borrow_mut().heartbeat(hb, now) {
                    Ok(()) => {
                        if !was_known {
                            worker::console_log!("SFU {id} is live");
                        }
                        Ok(Response::empty()?.with_status(204))
                    }
                    Err(e) => Ok(EdgeError::BadRequest(e.to_string()).into_response()),
                }
            }
            (Method::Post, "/choose") => {
                let ask: ChooseRequest = match req.json().await {
                    Ok(a) => a,
                    Err(e) => {
                        return Ok(
                            EdgeError::BadRequest(format!("choose body: {e}")).into_response()
                        )
                    }
                };
                match self.registry.borrow().choose(ask.location, now) {
                    Ok(choice) => {
                        worker::console_log!(
                            "room {}: SFU {} ({})",
                            ask.room,
                            choice.id,
                            choice.reason
                        );
                        Response::from_json(&choice)
                    }
                    Err(e) => Ok(EdgeError::NoMediaServer(e.to_string()).into_response()),
                }
            }
            (Method::Post, "/replace") => {
                let ask: ReplaceRequest = match req.json().await {
                    Ok(a) => a,
                    Err(e) => {
                        return Ok(
                            EdgeError::BadRequest(format!("replace body: {e}")).into_response()
                        )
                    }
                };
                match self
                    .registry
                    .borrow()
                    .replace(&ask.dead, &ask.exclude, None, now)
                {
                    Ok(choice) => Response::from_json(&choice),
                    Err(e) => Ok(EdgeError::NoMediaServer(e.to_string()).into_response()),
                }
            }
            (Method::Post, "/suspend") => {
                let ask: SuspendRequest = match req.json().await {
                    Ok(a) => a,
                    Err(e) => {
                        return Ok(
                            EdgeError::BadRequest(format!("suspend body: {e}")).into_response()
                        )
                    }
                };
                let why = if ask.draining {
                    Suspension::Draining
                } else {
                    Suspension::Down
                };
                self.registry.borrow_mut().suspend(&ask.sfu, why, now);
                Ok(Response::empty()?.with_status(204))
            }
            (Method::Get, "/status") => Response::from_json(&self.registry.borrow().status(now)),
            _ => Ok(EdgeError::NotFound("no such registry route".into()).into_response()),
        }
    }
}
