//! Enrollment decisions as live events, for the org's server-sent event stream.

use tokio::sync::broadcast;

use crate::mesh::EnrollmentRequest;

/// One decision or operator action, without secrets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EnrollEvent {
    pub org_id: String,
    pub app_id: String,
    /// `decision` (the gateway answered a device) or `approval` (an operator decided).
    pub kind: &'static str,
    pub node_id: String,
    pub subject: String,
    pub status: &'static str,
    pub reason: Option<String>,
    pub enrollment_id: Option<String>,
    pub at_ms: u64,
}

impl EnrollEvent {
    pub(crate) fn decision(
        org: &str,
        app: &str,
        req: &EnrollmentRequest,
        status: &'static str,
        reason: Option<&str>,
    ) -> Self {
        Self {
            org_id: org.to_owned(),
            app_id: app.to_owned(),
            kind: "decision",
            node_id: req.node_id.clone(),
            subject: hex::encode(req.subject),
            status,
            reason: reason.map(str::to_owned),
            enrollment_id: None,
            at_ms: crate::tenant::now_ms(),
        }
    }
}

/// Fan-out of [`EnrollEvent`]s; slow listeners miss events rather than slow enrollment.
#[derive(Clone)]
pub struct EnrollEvents(broadcast::Sender<EnrollEvent>);

impl Default for EnrollEvents {
    fn default() -> Self {
        Self(broadcast::channel(256).0)
    }
}

impl EnrollEvents {
    pub(crate) fn send(&self, e: EnrollEvent) {
        // No listener is fine.
        let _ = self.0.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EnrollEvent> {
        self.0.subscribe()
    }
}
