//! The schedule: per-service queues (priority, tenant rounds, arrival) and
//! the swap planner with its reservations.

pub mod queue;
mod rounds;
pub mod swap;
