//! A1111's task tracking (`modules/progress.py`): every generation request's task id is pending
//! from arrival until the runner starts it, then current, then finished (the last 16 kept);
//! `POST /internal/progress` and `GET /internal/pending-tasks` report it.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many finished task ids A1111 remembers.
const FINISHED_KEPT: usize = 16;
/// Pending ids are bounded by the queue limit in practice; this caps a misbehaving client.
const PENDING_MAX: usize = 4096;

#[derive(Debug, Default)]
pub struct TaskTracker {
    inner: Mutex<Tasks>,
}

#[derive(Debug, Default)]
struct Tasks {
    /// In arrival order.
    pending: VecDeque<String>,
    finished: VecDeque<String>,
}

/// What `/internal/progress` needs to know of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskStatus {
    pub queued: bool,
    pub completed: bool,
    /// 1-based place among the pending tasks, with their count.
    pub place: Option<(usize, usize)>,
}

impl TaskTracker {
    fn with<R>(&self, f: impl FnOnce(&mut Tasks) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `add_task_to_queue`.
    pub fn add(&self, id: &str) {
        self.with(|t| {
            if t.pending.len() >= PENDING_MAX {
                t.pending.pop_front();
            }
            t.pending.push_back(id.to_string());
        })
    }

    /// `finish_task`.
    pub fn finish(&self, id: &str) {
        self.with(|t| {
            t.pending.retain(|p| p != id);
            t.finished.push_back(id.to_string());
            while t.finished.len() > FINISHED_KEPT {
                t.finished.pop_front();
            }
        })
    }

    /// Pending ids, oldest first, without those the runner is on (A1111's `start_task` removes
    /// it; several when requests share a run).
    pub fn pending(&self, running: &[String]) -> Vec<String> {
        self.with(|t| t.pending.iter().filter(|p| !running.contains(p)).cloned().collect())
    }

    pub fn status(&self, id: &str, running: &[String]) -> TaskStatus {
        let pending = self.pending(running);
        let place = pending.iter().position(|p| p == id).map(|i| (i + 1, pending.len()));
        let completed = self.with(|t| t.finished.iter().any(|f| f == id));
        TaskStatus { queued: place.is_some(), completed, place }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_goes_pending_current_finished() {
        let t = TaskTracker::default();
        t.add("a");
        t.add("b");
        let a = ["a".to_string()];
        assert_eq!(t.status("b", &[]).place, Some((2, 2)));
        assert_eq!(t.pending(&a), vec!["b"]);
        assert_eq!(t.status("b", &a), TaskStatus { queued: true, completed: false, place: Some((1, 1)) });
        t.finish("a");
        assert_eq!(t.status("a", &[]), TaskStatus { queued: false, completed: true, place: None });
        for i in 0..20 {
            t.finish(&i.to_string());
        }
        assert!(!t.status("a", &[]).completed, "only the last 16 are remembered");
    }
}
