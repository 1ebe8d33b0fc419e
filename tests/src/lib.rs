//! Harness for integration tests against real servers on loopback.
