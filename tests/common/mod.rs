//! Helpers shared by the test binaries that include them (`mod common;`): each binary uses a
//! part, so unused items are not warned about.
#![allow(dead_code)]

pub mod counting_alloc;
pub mod files;
pub mod mat;
