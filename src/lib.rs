//! chatstack
