//! Shared state of the HTTP layer.

use std::sync::Arc;

use crate::cdc::source::Sources;
use crate::cdc::Dispatcher;
use crate::identity::{Authority, EnrollLimits};
use crate::metrics::Metrics;
use crate::tenant::Tenancy;

/// What start-up learned about the key provider, for `/ready`.
#[derive(Debug, Clone)]
pub struct KeyStatus {
    pub provider: &'static str,
    pub kek_id: String,
    /// `None` when the key opened every sampled record; else why not.
    pub problem: Option<String>,
    pub records_checked: usize,
    /// Latest periodic probe of the provider (wrap + unwrap round trip).
    pub health: crate::keys::health::KeyHealth,
}

/// What every handler reaches, behind one `Arc`: a request clones the state several times
/// (router, middleware, extractors), and one reference count is cheaper than a clone of each
/// part.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(Clone)]
pub struct Inner {
    pub tenancy: Tenancy,
    /// Networks allowed on TCP; empty: all.
    pub allow: Arc<Vec<ipnet::IpNet>>,
    /// Client certificates that act as API callers.
    pub client_roles: Arc<Vec<crate::config::CertRole>>,
    pub auth_guard: super::AuthGuard,
    pub authority: Authority,
    pub cdc: Dispatcher,
    pub sources: Sources,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<KeyStatus>,
    pub request_timeout: std::time::Duration,
    pub max_body_bytes: usize,
    pub(crate) openapi: super::book::ApiDoc,
    pub(crate) ui_dir: Option<Arc<std::path::PathBuf>>,
    /// Live event streams per caller and in all.
    pub(crate) streams: super::streams::StreamBudget,
    /// `/metrics` and `/ready` detail for callers without the admin token.
    pub(crate) public_detail: bool,
    /// A node link that is down makes `/ready` 503.
    pub(crate) ready_requires_nodes: bool,
    /// Single sign-on flows in progress and sessions waiting for their browser.
    pub(crate) sso: super::sso::Flows,
    /// Rates and gateway events for the overview.
    pub activity: super::activity::Activity,
}

impl AppState {
    pub fn new(
        tenancy: Tenancy,
        cdc: Dispatcher,
        sources: Sources,
        metrics: Arc<Metrics>,
        keys: KeyStatus,
        request_timeout: std::time::Duration,
        max_body_bytes: usize,
    ) -> Self {
        Self(Arc::new(Inner {
            allow: Arc::new(Vec::new()),
            client_roles: Arc::new(Vec::new()),
            auth_guard: super::AuthGuard::new(
                std::num::NonZeroU32::new(10).unwrap_or(std::num::NonZeroU32::MIN),
            ),
            authority: Authority::new(
                tenancy.clone(),
                EnrollLimits::new(
                    std::num::NonZeroU32::new(30).unwrap_or(std::num::NonZeroU32::MIN),
                ),
            ),
            tenancy,
            cdc,
            sources,
            metrics,
            keys: Arc::new(keys),
            request_timeout,
            max_body_bytes,
            openapi: super::book::ApiDoc::default(),
            ui_dir: None,
            streams: super::streams::StreamBudget::new(4, 64),
            public_detail: false,
            ready_requires_nodes: false,
            sso: Default::default(),
            activity: Default::default(),
        }))
    }

    /// The state's parts, to change while it is built (before any clone is handed out).
    fn parts(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.0)
    }

    /// Whether a node link that is down makes the gateway not ready.
    pub fn with_ready_requires_nodes(mut self, on: bool) -> Self {
        self.parts().ready_requires_nodes = on;
        self
    }

    /// Health and metrics detail (sink ids, org counts, KEK id, reasons) without a token.
    pub fn with_public_detail(mut self, on: bool) -> Self {
        self.parts().public_detail = on;
        self
    }

    /// Whether this request may see health and metrics detail: when the operator made it
    /// public, or for the gateway admin.
    pub(crate) async fn detail_for(&self, headers: &axum::http::HeaderMap) -> bool {
        if self.public_detail {
            return true;
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        bearer.is_some()
            && matches!(
                self.tenancy.authenticate(bearer).await,
                Ok(crate::tenant::Principal::Admin { .. })
            )
    }

    /// Live event streams one caller may hold, and all callers together.
    pub fn with_stream_budget(mut self, per_caller: usize, total: usize) -> Self {
        self.parts().streams = super::streams::StreamBudget::new(per_caller, total);
        self
    }

    /// Enrollment attempts allowed per source address and minute.
    pub fn with_enroll_rate(mut self, per_minute: std::num::NonZeroU32) -> Self {
        let authority = Authority::new(self.tenancy.clone(), EnrollLimits::new(per_minute));
        self.parts().authority = authority;
        self
    }

    /// The caller's scope on the path's org for `need` (the refusal is audited).
    pub(crate) async fn scope(
        &self,
        p: &crate::tenant::Principal,
        ids: &super::extract::Ids,
        need: crate::tenant::Need,
        what: &'static str,
    ) -> Result<crate::tenant::OrgScope, super::ApiError> {
        Ok(self.tenancy.authorize(p, ids.org(), need, what).await?)
    }

    /// Only these networks reach the API over TCP (the Unix socket is not affected).
    pub fn with_allow_list(mut self, allow: Vec<ipnet::IpNet>) -> Self {
        self.parts().allow = Arc::new(allow);
        self
    }

    /// Client certificates mapped to the admin or an org role (used when no bearer token).
    pub fn with_client_roles(mut self, roles: Vec<crate::config::CertRole>) -> Self {
        self.parts().client_roles = Arc::new(roles);
        self
    }

    /// Failed authentications allowed per source address (and per token id) and minute.
    pub fn with_auth_failure_rate(mut self, per_minute: std::num::NonZeroU32) -> Self {
        self.parts().auth_guard = super::AuthGuard::new(per_minute);
        self
    }

    /// Serves the operator UI from this directory at `/_/`.
    pub fn with_ui_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.parts().ui_dir = dir.map(Arc::new);
        self
    }

    pub(crate) fn with_openapi(mut self, doc: super::book::ApiDoc) -> Self {
        self.parts().openapi = doc;
        self
    }
}
