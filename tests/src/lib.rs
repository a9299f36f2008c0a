//! The race lab.
