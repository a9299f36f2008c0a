//! Helpers shared by the agent's end-to-end tests.

pub mod agent;
