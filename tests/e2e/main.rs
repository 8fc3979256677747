//! End-to-end tests of the `shoplens` binary: the real process, real files, real signals.

mod access;
mod analytics;
mod components;
mod compose;
mod demo;
mod exposure;
mod faults;
mod fuzz_corpus;
mod hostile;
mod openapi;
mod process;
mod read_model;
mod reconcile;
mod relay_crash;
mod run;
mod servers;
