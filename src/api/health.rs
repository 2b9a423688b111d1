//! Probes: liveness says the process serves; readiness says whether the store
//! answers, so an orchestrator can hold traffic back while Redis is away.

use http::{Response, StatusCode};

use crate::app::App;
use crate::body::Body;

pub fn healthz() -> Response<Body> {
    super::json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(app: &App) -> Response<Body> {
    let health = app.store.health().await;
    let status = if health.connected {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut value = serde_json::to_value(&health).unwrap_or_default();
    // Turns waiting for the store: non-zero while it is slow or away.
    value["history_queue"] = app.history.depth().into();
    super::json(status, &value)
}
