//! Application state and the one router every deployment mode serves.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sdapi_core::models_dir::ModelIndex;
use sdapi_core::networks::{NetworkFetcher, NetworkInspector};
use sdapi_core::processing::ProcessingContext;
use sdapi_core::runner::{BatchExecutor, BatchingLimits, ProcessingRunner, Runner};
use sdapi_core::styles::StyleDatabase;
use sdapi_protocol::api::cmd_flags::ServerFlags;
use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::options::Options;

use crate::auth::{self, AuthOutcome};
use crate::config::Config;
use crate::errors::HandlerError;
use crate::routes::table::API_ROUTES;
use crate::routes::{control, openapi};
use crate::storage::Outputs;

/// Everything the routes share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub ctx: ProcessingContext,
    pub flags: Arc<ServerFlags>,
    /// The output store (local folder until [`AppState::with_outputs`] installs S3).
    pub outputs: Outputs,
    /// Reads embedding files for `/embeddings` (the engine's, installed by the binary).
    pub inspector: Option<Arc<dyn NetworkInspector>>,
    /// Asynchronous jobs of this process (docs/jobs.md).
    pub jobs: Arc<crate::jobs::Jobs>,
    /// A1111's pending/finished task ids (`/internal/progress`, `/internal/pending-tasks`).
    pub tasks: Arc<crate::jobs::tasks::TaskTracker>,
    /// Where asynchronous requests go on Lambda (`SDAPI_JOBS_QUEUE_URL`; docs/jobs.md).
    pub job_queue: Option<Arc<dyn crate::jobs::handoff::JobQueue>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("runner: {0}")]
    Runner(String),
    #[error("models directory: {0}")]
    Models(String),
}

impl AppState {
    /// Builds the real service: model index, options, and a runner that owns `executor` (the
    /// binary passes the engine's executor for the configured device; this crate has no model code).
    pub fn from_config(config: Config, executor: impl BatchExecutor) -> Result<Self, StartupError> {
        // A shared run stays within the bound one request's batch has.
        let batching = BatchingLimits {
            max_images: config.batch_max_images,
            max_pixels: config.limits.max_batch_megapixels.saturating_mul(1_000_000),
        };
        let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start_with(executor, batching, None));
        Self::with_runner(config, runner)
    }

    /// Same, with a given runner (tests inject recording runners here).
    pub fn with_runner(config: Config, runner: Arc<dyn Runner>) -> Result<Self, StartupError> {
        let models = ModelIndex::scan(&config.models_dir).map_err(|e| StartupError::Models(e.to_string()))?;
        let mut options = Options::new();
        let default_ckpt = config
            .checkpoint
            .as_deref()
            .and_then(|c| models.find_checkpoint(c))
            .or_else(|| models.default_checkpoint())
            .map(|c| c.item.title.clone());
        if let Some(title) = default_ckpt {
            // The option holds the checkpoint title, as A1111's does.
            let _ = options.set("sd_model_checkpoint", serde_json::Value::String(title));
        }
        let flags = ServerFlags {
            models_dir: Some(config.models_dir.to_string_lossy().into_owned()),
            listen: !config.listen.ip().is_loopback(),
            port: Some(config.listen.port()),
            api_auth: (!config.api_auth.is_empty()).then(|| "<redacted>".to_string()),
            use_cpu: if config.device == "cpu" { vec!["all".into()] } else { vec![] },
            no_half: config.device == "cpu",
            ..ServerFlags::default()
        };
        // A broken styles file should not keep the service down: log it and start without styles.
        let styles = StyleDatabase::load(&config.styles_file).unwrap_or_else(|e| {
            tracing::warn!("styles not loaded: {e}");
            StyleDatabase::default()
        });
        Ok(Self {
            ctx: ProcessingContext {
                runner,
                options: Arc::new(RwLock::new(options)),
                models: Arc::new(RwLock::new(models)),
                version: sdapi_core::VERSION.to_string(),
                limits: config.limits,
                styles: Arc::new(RwLock::new(styles)),
                fetcher: None,
            },
            inspector: None,
            jobs: Arc::new(crate::jobs::Jobs::new(config.jobs.keep)),
            tasks: Arc::default(),
            job_queue: None,
            flags: Arc::new(flags),
            outputs: Outputs::local(&config),
            config: Arc::new(config),
        })
    }

    /// The default checkpoint (the `sd_model_checkpoint` option) as the runner loads it.
    pub fn default_model(&self) -> Option<sdapi_core::runner::ModelSelection> {
        let title = self.ctx.options.read().unwrap_or_else(|e| e.into_inner()).sd_model_checkpoint()?;
        let models = self.ctx.models.read().unwrap_or_else(|e| e.into_inner());
        let checkpoint = models.find_checkpoint(&title).or_else(|| models.default_checkpoint())?;
        Some(sdapi_core::runner::ModelSelection { checkpoint: checkpoint.path(), vae: None })
    }

    /// Installs the reader `/embeddings` lists files with (the binaries pass the engine's).
    pub fn with_inspector(mut self, inspector: Arc<dyn NetworkInspector>) -> Self {
        self.inspector = Some(inspector);
        self
    }

    /// Fetches LoRAs and embeddings the models folder lacks through `fetcher`; its cache folder is
    /// listed with the models' own (`/loras`, `/embeddings`).
    /// Hands asynchronous requests to `queue` (on Lambda, where they cannot run in-process).
    pub fn with_job_queue(mut self, queue: Arc<dyn crate::jobs::handoff::JobQueue>) -> Self {
        self.job_queue = Some(queue);
        self
    }

    pub fn with_fetcher(mut self, fetcher: Arc<dyn NetworkFetcher>) -> Self {
        {
            let mut models = self.ctx.models.write().unwrap_or_else(|e| e.into_inner());
            let index = std::mem::take(&mut *models);
            *models = index.with_network_cache(fetcher.cache_dir().to_path_buf());
        }
        self.ctx.fetcher = Some(fetcher);
        self
    }

    /// Replaces the output store (main installs S3 here; building it needs async AWS config loading).
    pub fn with_outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = outputs;
        self
    }
}

/// Routes `SDAPI_API_AUTH` protects: every `/sdapi/*` route except the LoRA routes (A1111's Lora
/// extension registers them outside the authenticated API), and the `/internal/*` routes that
/// reveal state. Open: `/internal/ping` (health checks), `/openapi.json` and `/docs` (A1111's
/// FastAPI docs are open too).
pub fn requires_auth(path: &str) -> bool {
    let sdapi = path.starts_with("/sdapi/") && !path.contains("loras");
    let internal = path.starts_with("/internal/") && path != "/internal/ping";
    sdapi || internal
}

/// HTTP Basic on the routes of [`requires_auth`].
async fn require_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let protected = requires_auth(path);
    if protected && !state.config.api_auth.is_empty() {
        let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
        match auth::check(header, &state.config.api_auth) {
            AuthOutcome::Allowed => {}
            AuthOutcome::Missing => return HandlerError::Api(ApiError::http(401, "Not authenticated")).into_response(),
            AuthOutcome::Wrong => {
                return HandlerError::Api(ApiError::http(401, "Incorrect username or password")).into_response();
            }
        }
    }
    next.run(req).await
}

/// Oversized request headers get a 431 in A1111's error shape (Lambda's front doors and the plain
/// server's connection buffer stop far larger ones before they get here).
async fn limit_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let size = request_head_bytes(&req);
    let limit = state.config.max_header_bytes;
    if size > limit {
        let detail = format!(
            "Request Header Fields Too Large: {size} bytes of request line and headers, more than this server accepts ({limit}, SDAPI_MAX_HEADER_KB)"
        );
        return HandlerError::Api(ApiError::http(431, detail)).into_response();
    }
    next.run(req).await
}

/// Request line and headers as they were sent: `name: value\r\n` per header.
fn request_head_bytes(req: &Request) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>() + line
}

/// A1111 adds `X-Process-Time` (seconds, 4 decimals) to every response its middleware sees.
async fn process_time(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&format!("{:.4}", started.elapsed().as_secs_f64())) {
        resp.headers_mut().insert("x-process-time", v);
    }
    resp
}

async fn not_found() -> HandlerError {
    HandlerError::Plain(StatusCode::NOT_FOUND, "Not Found".into())
}

async fn method_not_allowed() -> HandlerError {
    HandlerError::Plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into())
}

/// A panic inside a route becomes A1111's 500 body; the server keeps serving.
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "internal error".into());
    tracing::error!("handler panicked: {msg}");
    HandlerError::Api(ApiError::runtime(msg)).into_response()
}

/// Every route of A1111 v1.10.1's API (the table in `routes::table`), and our own internal routes.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let sdapi = API_ROUTES.iter().fold(Router::new(), |router, r| router.route(r.path, (r.handler)()));
    Router::new()
        .merge(sdapi)
        .route("/", get(control::root))
        .route("/internal/ping", get(control::ping))
        .route("/health", get(control::health))
        .route("/ready", get(control::ready))
        .route("/internal/runner", get(control::runner_counters))
        .route("/internal/progress", axum::routing::post(control::task_progress))
        .route("/internal/pending-tasks", get(control::pending_tasks))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_auth))
        .layer(middleware::from_fn_with_state(state.clone(), limit_headers))
        .layer(middleware::from_fn(process_time))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(state)
}
