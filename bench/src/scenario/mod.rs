//! One module per `bench` scenario.

pub mod fanout;
