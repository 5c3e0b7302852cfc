//! End-to-end and rule tests for the sandbox.
