//! `sdapi`: one binary, one router. Under Lambda (`AWS_LAMBDA_RUNTIME_API` set) `lambda_http` serves
//! the router and S3/SQS batch events share the function (`sdapi_handler::lambda`); otherwise the
//! same router listens on `SDAPI_LISTEN` (default 127.0.0.1:7860).

// The Lambda service future (runtime → dispatch → axum router → process_images) nests deeper than
// rustc's default layout query depth.
#![recursion_limit = "256"]

use sdapi_engine::executor::DiffusionExecutor;
use sdapi_engine::networks::EngineInspector;
use sdapi_handler::storage::Outputs;
use sdapi_handler::storage::models_sync::{ON_DEMAND_FOLDERS, sync_models_except};
use sdapi_handler::storage::network_fetch::S3NetworkFetcher;
use sdapi_handler::{app, config::Config, lambda};
use sdapi_server::serve::ServeLimits;

fn init_tracing(on_lambda: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    // CloudWatch parses one JSON object per line; humans read the compact format.
    if on_lambda {
        builder.json().without_time().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutdown signal received, finishing in-flight requests");
}

/// Cold start: bring the models from S3 before the models directory is scanned.
async fn sync_models_at_start(config: &Config, uri: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let shared = aws_config::load_from_env().await;
    let client = sdapi_handler::storage::s3::build_client(&shared, &config.storage.s3);
    // LoRAs and embeddings come on demand (S3NetworkFetcher) unless asked for at start.
    let skip: &[&str] = if config.storage.sync_networks_at_start { &[] } else { &ON_DEMAND_FOLDERS };
    let report = sync_models_except(&client, uri, &config.models_dir, skip).await?;
    tracing::info!(
        uri,
        dir = %config.models_dir.display(),
        downloaded = report.downloaded,
        skipped = report.skipped,
        bytes = report.bytes,
        ms = report.elapsed.as_millis() as u64,
        "models synced from S3"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    sdapi_server::allocator::tune_allocator();
    let on_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    init_tracing(on_lambda);
    let config = Config::from_env()?;
    if let Some(uri) = &config.storage.models_s3_uri {
        sync_models_at_start(&config, uri).await?;
    }
    let outputs = Outputs::from_config(&config).await;
    tracing::info!(store = %outputs.store.describe(), save_all = outputs.save_all, "output store");
    let executor = DiffusionExecutor::with_dtype(&config.device, config.dtype.as_deref())?;
    let mut state = app::AppState::from_config(config.clone(), executor)?
        .with_outputs(outputs)
        .with_inspector(std::sync::Arc::new(EngineInspector::new()));
    if let Some(uri) = &config.storage.models_s3_uri {
        let shared = aws_config::load_from_env().await;
        let client = sdapi_handler::storage::s3::build_client(&shared, &config.storage.s3);
        let cache = config.storage.network_cache_dir.clone();
        let fetcher = S3NetworkFetcher::new(client, uri, cache.clone(), config.storage.network_limits)?;
        tracing::info!(uri, cache = %cache.display(), "LoRAs and embeddings are fetched from the models bucket on demand");
        state = state.with_fetcher(std::sync::Arc::new(fetcher));
    }
    if let (false, Some(url)) = (config.jobs.async_enabled, &config.jobs.queue_url) {
        let queue = sdapi_handler::jobs::handoff::SqsQueue::from_env(url.clone()).await;
        tracing::info!(queue = %url, "asynchronous requests are handed to the jobs queue");
        state = state.with_job_queue(std::sync::Arc::new(queue));
    }
    if config.preload {
        match state.default_model() {
            Some(model) => {
                tracing::info!(checkpoint = %model.checkpoint.display(), "preloading the default checkpoint");
                state.ctx.runner.preload(model);
            }
            None => tracing::warn!("SDAPI_PRELOAD: no checkpoint to preload"),
        }
    }
    let router = app::router(state.clone());
    if on_lambda {
        tracing::info!("serving HTTP and batch events through the Lambda runtime");
        lambda::run(router, state).await
    } else {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        tracing::info!("listening on http://{}", listener.local_addr()?);
        let limits = ServeLimits { header_read: config.header_read_timeout, shutdown_grace: config.shutdown_grace };
        // One signal, two drains within the same grace period: HTTP connections, and the
        // asynchronous jobs (which hold no connection).
        let (stopping, mut stopped) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown_signal().await;
            let _ = stopping.send(true);
        };
        let jobs = async {
            if stopped.wait_for(|s| *s).await.is_ok() {
                let deadline = tokio::time::Instant::now() + config.shutdown_grace;
                sdapi_handler::jobs::drain(&state, deadline).await;
            }
        };
        tokio::join!(sdapi_server::serve::serve(listener, router, limits, signal), jobs);
        Ok(())
    }
}
