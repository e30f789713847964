//! The access log writer: lines from several threads, a target that does
//! not drain, reopening after a rename, stopping.
