//! The resource limiter of a policy store: caps linear memory and tables, and
//! remembers whether a memory growth was refused so that a trap that follows
//! (Rust guests abort on allocation failure) is reported as
//! [`TrapReason::Memory`](crate::TrapReason::Memory).

use wasmtime::ResourceLimiter;

/// Most table elements any one table may hold.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Most core and component instances in one store.
const MAX_INSTANCES: usize = 256;
/// Most tables in one store.
const MAX_TABLES: usize = 256;
/// Most linear memories in one store.
const MAX_MEMORIES: usize = 16;

/// A [`ResourceLimiter`] with a byte budget shared by all linear memories of
/// the store (a component may hold several core instances).
#[derive(Debug)]
pub(crate) struct PolicyLimiter {
    memory_limit: usize,
    memory_used: usize,
    memory_refused: bool,
}

impl PolicyLimiter {
    /// A limiter allowing `memory_limit` bytes of linear memory in total.
    pub(crate) fn new(memory_limit: usize) -> Self {
        Self {
            memory_limit,
            memory_used: 0,
            memory_refused: false,
        }
    }

    /// Whether a memory growth was refused since the last [`Self::clear_refused`].
    pub(crate) fn memory_refused(&self) -> bool {
        self.memory_refused
    }

    /// Forgets earlier refusals (called before each guest call).
    pub(crate) fn clear_refused(&mut self) {
        self.memory_refused = false;
    }
}

impl ResourceLimiter for PolicyLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_used
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_limit || maximum.is_some_and(|max| desired > max) {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::PolicyLimiter;
    use wasmtime::ResourceLimiter;

    #[test]
    fn budget_is_shared_across_memories() -> wasmtime::Result<()> {
        let mut l = PolicyLimiter::new(100);
        assert!(l.memory_growing(0, 60, None)?);
        assert!(!l.memory_refused());
        // A second memory may only take what is left.
        assert!(!l.memory_growing(0, 50, None)?);
        assert!(l.memory_refused());
        l.clear_refused();
        assert!(l.memory_growing(0, 40, None)?);
        // Growing the first memory counts only the difference.
        assert!(!l.memory_growing(60, 61, None)?);
        Ok(())
    }
}
