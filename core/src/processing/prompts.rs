//! The prompts of a request on their way to the text encoder (docs/a1111-behaviour.md §7.5–7.8):
//! styles applied, comments stripped (these are the infotext's prompts), then per batch the
//! extra-network tags removed and the batch's LoRAs resolved.

use std::collections::HashSet;
use std::sync::Arc;

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::options::Options;
use sdapi_protocol::prompt::{parse_extra_networks, strip_comments};
use sdapi_protocol::python_json::float_repr;

use super::{CommonParams, ProcessingContext};
use crate::networks::{BatchNetworks, NetworkError, NetworkFetcher, batch_networks, check_network_name, is_lora_tag};
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

/// A1111's `sd_lora` option: a LoRA (by file name) added to every prompt that does not already
/// name it, as `<lora:NAME:extra_networks_default_multiplier>` (the infotext shows it).
pub fn with_default_lora(ctx: &ProcessingContext, prompt: String, opts: &Options) -> String {
    let Some(name) = opts.get("sd_lora").and_then(|v| v.as_str()).filter(|n| !n.is_empty() && *n != "None") else {
        return prompt;
    };
    let known = ctx.models.read().unwrap_or_else(|e| e.into_inner()).networks.loras.iter().any(|l| l.name == name);
    let named = parse_extra_networks(&prompt)
        .1
        .iter()
        .any(|t| is_lora_tag(t) && t.items.first().map(String::as_str) == Some(name));
    if !known || named {
        return prompt;
    }
    let multiplier = opts.get("extra_networks_default_multiplier").and_then(|v| v.as_f64()).unwrap_or(1.0);
    format!("{prompt}<lora:{name}:{}>", float_repr(multiplier))
}

/// One batch's prompts for the encoder and its networks. Hashing a LoRA the first time reads the
/// whole file, so it runs off the async threads. With a fetcher, LoRAs the first prompt names and
/// embeddings the texts mention are fetched first when the folders lack them.
pub async fn batch_networks_for(
    ctx: &ProcessingContext,
    prompts: &[String],
    negative_prompts: &[String],
    opts: &Options,
) -> Result<(BatchNetworks, JobNetworks), ApiError> {
    if let Some(fetcher) = &ctx.fetcher {
        fetch_missing(ctx, fetcher.as_ref(), prompts, negative_prompts).await?;
    }
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
    if let Some(fetcher) = &ctx.fetcher {
        for lora in &batch.loras {
            if lora.path.starts_with(fetcher.cache_dir()) {
                fetcher.touch(&lora.path);
            }
        }
    }
    let job = JobNetworks { loras: batch.loras.clone(), embeddings, ti_hashes_in_infotext: ti_hashes };
    Ok((batch, job))
}

/// Fetches what the folders lack: LoRAs named by the first prompt's tags (a missing one stays
/// "not found"; a failed fetch fails the request, since generating without it would silently
/// differ), and embeddings the texts mention (best effort: a bucket that cannot be listed must not
/// fail requests that use no embedding).
async fn fetch_missing(
    ctx: &ProcessingContext,
    fetcher: &dyn NetworkFetcher,
    prompts: &[String],
    negative_prompts: &[String],
) -> Result<(), ApiError> {
    let tags = prompts.first().map(|p| parse_extra_networks(p).1).unwrap_or_default();
    let (missing, known) = {
        let models = ctx.models.read().unwrap_or_else(|e| e.into_inner());
        let missing: Vec<String> = tags
            .iter()
            .filter(|t| is_lora_tag(t))
            .filter_map(|t| t.positional.first().cloned())
            .filter(|name| models.networks.find_lora(name).is_none())
            .collect();
        let known: HashSet<String> = models.networks.embeddings.iter().map(|e| e.name.clone()).collect();
        (missing, known)
    };
    let mut fetched = 0usize;
    for name in missing {
        check_network_name(&name).map_err(|e| ApiError::http(422, e.to_string()))?;
        match fetcher.fetch_lora(&name).await {
            Ok(true) => fetched += 1,
            Ok(false) => {}
            Err(e) => return Err(ApiError::runtime(format!("LoRA {name:?} could not be fetched: {e}"))),
        }
    }
    let texts: Vec<String> = prompts.iter().chain(negative_prompts).cloned().collect();
    match fetcher.fetch_embeddings(&texts, &known).await {
        Ok(n) => fetched += n,
        Err(e) => tracing::warn!("embeddings not fetched: {e}"),
    }
    if fetched > 0 {
        let models = ctx.models.clone();
        tokio::task::spawn_blocking(move || models.write().unwrap_or_else(|e| e.into_inner()).rescan_networks())
            .await
            .map_err(|e| ApiError::runtime(format!("rescanning networks failed: {e}")))?;
    }
    Ok(())
}
