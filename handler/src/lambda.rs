//! Lambda dispatch: one function receives HTTP events (function URL, API Gateway, ALB) and batch
//! events (S3, SQS). `lambda_http::run` can only parse the former, so the runtime is driven with
//! raw JSON: batch events go to [`crate::batch`], everything else through lambda_http's own
//! request/response conversion (its `Adapter`, what `lambda_http::run` uses) into the axum router.

use axum::Router;
use lambda_http::lambda_runtime::{self, Context, LambdaEvent};
use lambda_http::request::LambdaRequest;
use lambda_http::tower::Service;
use serde_json::Value;

use crate::app::AppState;
use crate::batch;

/// Handles one invocation; the value is the Lambda reply.
pub async fn dispatch(
    router: Router,
    state: &AppState,
    payload: Value,
    context: Context,
) -> Result<Value, lambda_runtime::Error> {
    if batch::is_batch_event(&payload) {
        return Ok(batch::handle_event(state, payload).await?);
    }
    let request: LambdaRequest = serde_json::from_value(payload)?;
    let mut adapter = lambda_http::Adapter::from(router);
    let response = adapter.call(LambdaEvent::new(request, context)).await?;
    Ok(serde_json::to_value(response)?)
}

/// Serves invocations until the runtime stops.
pub async fn run(router: Router, state: AppState) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<Value>| {
        let (router, state) = (router.clone(), state.clone());
        async move { dispatch(router, &state, event.payload, event.context).await }
    }))
    .await
}
