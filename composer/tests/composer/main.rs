//! The composer against the five real services, in-process, with a real event log; faults
//! are injected with a small double in front of a service.

mod cache;
mod faults;
mod limits;
mod list;
mod page;
mod replicas;
mod summary;
mod support;
