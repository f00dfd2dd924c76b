//! One module per `bench` scenario.

pub mod connections;
pub mod fanout;
