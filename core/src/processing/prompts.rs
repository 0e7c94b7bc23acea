//! The prompts of a request on their way to the text encoder (docs/a1111-behaviour.md §7.5–7.8):
//! styles applied, comments stripped (these are the infotext's prompts), then per batch the
//! extra-network tags removed and the batch's LoRAs resolved.

use std::sync::Arc;

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::options::Options;
use sdapi_protocol::prompt::strip_comments;

use super::{CommonParams, ProcessingContext};
use crate::networks::{BatchNetworks, NetworkError, batch_networks};
use crate::runner::JobNetworks;
use crate::styles::StyleDatabase;

/// A1111's `setup_prompts` + the comments script: the request's prompt and negative prompt with
/// its styles applied, then `#` comments removed when `enable_prompt_comments` is on.
pub fn request_prompts(p: &CommonParams, styles: &StyleDatabase, opts: &Options) -> (String, String) {
    let prompt = styles.apply_to_prompt(&p.prompt, &p.styles);
    let negative = styles.apply_to_negative_prompt(&p.negative_prompt, &p.styles);
    if opts.enable_prompt_comments() {
        (strip_comments(&prompt), strip_comments(&negative))
    } else {
        (prompt, negative)
    }
}

/// One batch's prompts for the encoder and its networks. Hashing a LoRA the first time reads the
/// whole file, so it runs off the async threads.
pub async fn batch_networks_for(
    ctx: &ProcessingContext,
    prompts: &[String],
    opts: &Options,
) -> Result<(BatchNetworks, JobNetworks), ApiError> {
    let models = ctx.models.clone();
    let prompts = prompts.to_vec();
    let default_multiplier = opts.get("extra_networks_default_multiplier").and_then(|v| v.as_f64()).unwrap_or(1.0);
    let lora_hashes = opts.get("lora_add_hashes_to_infotext").and_then(|v| v.as_bool()).unwrap_or(true);
    let ti_hashes = opts.get("textual_inversion_add_hashes_to_infotext").and_then(|v| v.as_bool()).unwrap_or(true);
    let resolved = tokio::task::spawn_blocking(move || {
        let models = models.read().unwrap_or_else(|e| e.into_inner());
        let batch =
            batch_networks(&prompts, &models.networks, default_multiplier, lora_hashes, |e| models.lora_hash(e));
        batch.map(|b| (b, Arc::clone(&models.networks.embeddings)))
    })
    .await
    .map_err(|e| ApiError::runtime(format!("resolving extra networks failed: {e}")))?;
    let (batch, embeddings) = resolved.map_err(|e| match e {
        NetworkError::BadTag(_) | NetworkError::TooMany { .. } => ApiError::http(422, e.to_string()),
        other => ApiError::runtime(other.to_string()),
    })?;
    for comment in &batch.comments {
        tracing::info!(comment = %comment, "extra networks");
    }
    let job = JobNetworks { loras: batch.loras.clone(), embeddings, ti_hashes_in_infotext: ti_hashes };
    Ok((batch, job))
}
