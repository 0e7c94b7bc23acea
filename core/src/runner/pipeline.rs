//! The real executor: runs a batch through the diffusion engine on the runner's device.

use super::{BatchExecutor, BatchJob, BatchOutput, JobControl, RunnerError};

/// Owns the device and the model cache; lives on the runner's worker thread.
pub struct DiffusionExecutor {}

impl DiffusionExecutor {
    pub fn new() -> Self {
        Self {}
    }
}

impl Default for DiffusionExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchExecutor for DiffusionExecutor {
    fn prepare(&mut self, _job: &BatchJob) -> Result<bool, RunnerError> {
        Err(RunnerError::Model("the diffusion engine is not wired in yet".into()))
    }

    fn execute(&mut self, _job: &BatchJob, _control: &JobControl<'_>) -> Result<BatchOutput, RunnerError> {
        Err(RunnerError::Execution("the diffusion engine is not wired in yet".into()))
    }
}
