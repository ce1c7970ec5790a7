//! [`RouteBook`]: registers each route together with its OpenAPI description.

use axum::handler::Handler;
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;
use serde_json::{json, Map, Value};

use super::AppState;
use crate::tenant::Need;

/// Who may call a route.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    Public,
    GatewayAdmin,
    /// Any valid token, of any role; the answer concerns the caller alone.
    AnyToken,
    Org(Need),
}

impl Access {
    fn describe(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::GatewayAdmin => "admin token",
            Access::AnyToken => "any valid token (admin or org token of any role)",
            Access::Org(Need::Read) => {
                "admin token, or an org token with role viewer, operator or org-admin"
            }
            Access::Org(Need::Operate) => {
                "admin token, or an org token with role operator or org-admin"
            }
            Access::Org(Need::Manage) => "admin token, or an org token with role org-admin",
            Access::Org(Need::Ingest) => {
                "admin token, or an org token with role ingest, operator or org-admin"
            }
            Access::Org(Need::GatewayAdmin) => "admin token",
        }
    }
}

/// One route's description. Nothing of it is built until `/openapi.json` is asked for: a
/// document of JSON values held from start-up would cost far more memory than it is worth.
#[derive(Clone, Copy)]
pub(crate) struct Doc {
    pub summary: &'static str,
    pub access: Access,
    /// JSON Schema of the request body, when there is one.
    pub body: Option<fn() -> Value>,
    /// Status of a successful answer.
    pub ok: u16,
}

/// A [`Doc`] in one line.
pub(crate) fn doc(
    summary: &'static str,
    access: Access,
    body: Option<fn() -> Value>,
    ok: u16,
) -> Doc {
    Doc {
        summary,
        access,
        body,
        ok,
    }
}

pub(crate) struct RouteBook {
    router: Router<AppState>,
    routes: Vec<(&'static str, &'static str, Doc)>,
}

/// The registered routes, rendered as an OpenAPI 3.1 document on request.
#[derive(Clone, Default)]
pub(crate) struct ApiDoc {
    version: &'static str,
    routes: std::sync::Arc<[(&'static str, &'static str, Doc)]>,
}

fn operation(path: &str, doc: &Doc) -> Value {
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let mut op = json!({
        "summary": doc.summary,
        "description": format!("Access: {}.", doc.access.describe()),
        "responses": {
            doc.ok.to_string(): {"description": "success"},
            "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    });
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if !matches!(doc.access, Access::Public) {
        op["security"] = json!([{"bearer": []}]);
    }
    if let Some(schema) = doc.body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {}}});
        op["requestBody"]["content"]["application/json"]["schema"] = schema();
    }
    op
}

impl ApiDoc {
    /// The OpenAPI 3.1 document.
    pub(crate) fn render(&self) -> Value {
        let mut paths = Map::new();
        for (method, path, doc) in self.routes.iter() {
            let entry = paths
                .entry((*path).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert((*method).to_owned(), operation(path, doc));
            }
        }
        let mut doc = json!({
            "openapi": "3.1.0",
            "info": {"title": "peat-gateway admin API", "version": self.version},
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                "schemas": {"Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}
                }}
            },
        });
        doc["paths"] = Value::Object(paths);
        doc
    }
}

impl RouteBook {
    pub(crate) fn new() -> Self {
        Self {
            router: Router::new(),
            routes: Vec::new(),
        }
    }

    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        mr: MethodRouter<AppState>,
        doc: Doc,
    ) -> Self {
        self.router = self.router.route(path, mr);
        self.routes.push((method, path, doc));
        self
    }

    pub(crate) fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        h: H,
        doc: Doc,
    ) -> Self {
        self.add("get", path, get(h), doc)
    }

    pub(crate) fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        h: H,
        doc: Doc,
    ) -> Self {
        self.add("post", path, post(h), doc)
    }

    /// A POST route whose body may exceed the global limit, up to `limit` bytes.
    pub(crate) fn post_large<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        h: H,
        doc: Doc,
        limit: usize,
    ) -> Self {
        let mr = post(h).layer(axum::extract::DefaultBodyLimit::max(limit));
        self.add("post", path, mr, doc)
    }

    pub(crate) fn put<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        h: H,
        doc: Doc,
    ) -> Self {
        self.add("put", path, put(h), doc)
    }

    pub(crate) fn patch<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        h: H,
        doc: Doc,
    ) -> Self {
        self.add("patch", path, patch(h), doc)
    }

    pub(crate) fn delete<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        h: H,
        doc: Doc,
    ) -> Self {
        self.add("delete", path, delete(h), doc)
    }

    /// The router and its OpenAPI description.
    pub(crate) fn finish(self, version: &'static str) -> (Router<AppState>, ApiDoc) {
        let doc = ApiDoc {
            version,
            routes: self.routes.into(),
        };
        (self.router, doc)
    }
}
