//! What the model decides about sharing a run (several requests in one batch, see the runner's
//! batching): when rows condition exactly as they would in their own jobs.
//!
//! Each distinct prompt is its own text-encoder call whatever else is in the batch, so the
//! conditioning of a row does not depend on its neighbours, with two exceptions found from the
//! tokens alone (no encoder runs): A1111 pads the conditioning of rows with fewer 75-token chunks
//! to the longest row of the batch (`reconstruct_multicond_batch`), and `TI hashes` in the
//! infotext name every embedding the batch used.

use sdapi_core::runner::BatchJob;
use sdapi_protocol::prompt::ScheduleParams;

use super::first_pass_steps;
use super::pass::{model_conditioner, text_conditioner};
use crate::model::LoadedModel;
use crate::text::{EmbeddingTable, LearnedConditioningPlan, TextError, multicond_plan};

/// The chunk counts every encoder call of `job` has, as `positive × 2¹⁶ + negative`: jobs with
/// equal signatures may share a run. None when the job's own calls differ in length (it is
/// padded alone as A1111 pads it) or a text uses an embedding.
pub(super) fn chunk_signature(
    model: &LoadedModel,
    table: &EmbeddingTable,
    job: &BatchJob,
) -> Result<Option<u64>, TextError> {
    let model_conditioner = model_conditioner(model, job, (job.width, job.height));
    let conditioner = text_conditioner(&model_conditioner, table, job);
    let params = ScheduleParams {
        steps: first_pass_steps(job),
        hires_steps: None,
        use_old_scheduling: job.settings.use_old_scheduling,
    };
    let mut signature = 0u64;
    for plan in [multicond_plan(&job.prompts, &params), LearnedConditioningPlan::new(&job.negative_prompts, &params)] {
        let mut chunk_count = None;
        for j in 0..plan.distinct.len() {
            let batch = conditioner.tokenize(&plan.call_texts(j))?;
            if batch.embeddings.iter().any(|fixes| !fixes.is_empty()) {
                return Ok(None);
            }
            if *chunk_count.get_or_insert(batch.chunks.len()) != batch.chunks.len() {
                return Ok(None);
            }
        }
        // Chunks are bounded by `max_prompt_chunks` (far below 2¹⁶).
        signature = (signature << 16) | chunk_count.unwrap_or(0) as u64;
    }
    Ok(Some(signature))
}
