//! The properties the fuzz targets check, in one place for the libFuzzer targets and for
//! the stable corpus test of the ShopLens workspace (which includes `checks.rs` itself).

mod checks;

pub use checks::{analytics_sql_check, envelope_decode};
