//! Where the ClickHouse read model keeps its generations and its live pointer, and the two
//! questions its writer and readers both ask of it (which generation is live, how fresh it
//! is), so they ask them with the same SQL.
//!
//! For the base name `{base}` (`read_model.clickhouse.database`): generation `g` is the
//! database `{base}_g{g}`; the live pointer is the table `{base}_meta.live`, one row per
//! switch, the newest `set_at` wins.

/// The prefix of every generation's database name.
pub fn generation_prefix(base: &str) -> String {
    format!("{base}_g")
}

/// The database that holds generation `generation`.
pub fn generation_database(base: &str, generation: u32) -> String {
    format!("{}{generation}", generation_prefix(base))
}

/// The database that holds the live pointer.
pub fn meta_database(base: &str) -> String {
    format!("{base}_meta")
}

/// The generation a database named `database` holds, if it is one of `base`'s.
pub fn generation_of(base: &str, database: &str) -> Option<u32> {
    let rest = database.strip_prefix(&generation_prefix(base))?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// Creates the live pointer's table in the meta database (which must exist).
pub fn create_live_table_sql(base: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.live (generation UInt32, set_at Int64) \
         ENGINE = MergeTree ORDER BY set_at",
        meta_database(base)
    )
}

/// One row: the live generation and how many switches there were (0: none was made live
/// yet, and the generation is meaningless).
pub fn live_pointer_sql(base: &str) -> String {
    format!(
        "SELECT argMax(generation, set_at), count() FROM {}.live",
        meta_database(base)
    )
}

/// At most one row: the freshness watermark of the generation in `database` (the newest
/// `as_of_ms` and when it first became visible); none while the generation is empty.
pub fn freshness_sql(database: &str) -> String {
    format!(
        "SELECT as_of_ms, min(visible_at_ms) FROM {database}.freshness \
         GROUP BY as_of_ms ORDER BY as_of_ms DESC LIMIT 1"
    )
}

/// One row, the generation in `database` as a reader's result cache needs it: a data
/// version, then the freshness row count, the newest `as_of_ms` and when it first became
/// visible (what [`freshness_sql`] answers, meaningless when the count is 0).
///
/// The version is the number of rows in `positions` and `apply_journal`: every apply that
/// stores anything ends by inserting positions, and a repair of the aggregates by marking
/// the journal, and neither table ever loses a row, so the data can only change together
/// with this number.
pub fn watermark_sql(database: &str) -> String {
    format!(
        "SELECT (SELECT count() FROM {database}.positions) \
              + (SELECT count() FROM {database}.apply_journal), \
                (SELECT count() FROM {database}.freshness), \
                (SELECT max(as_of_ms) FROM {database}.freshness), \
                (SELECT min(visible_at_ms) FROM {database}.freshness \
                 WHERE as_of_ms = (SELECT max(as_of_ms) FROM {database}.freshness))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_databases_named_after_the_base() {
        assert_eq!(generation_database("shop", 12), "shop_g12");
        assert_eq!(meta_database("shop"), "shop_meta");
        assert_eq!(generation_of("shop", "shop_g12"), Some(12));
        assert_eq!(generation_of("shop", "shop_g"), None);
        assert_eq!(generation_of("shop", "shop_meta"), None);
        assert_eq!(generation_of("shop", "shop_g1x"), None);
        assert_eq!(generation_of("shop", "other_g1"), None);
        assert_eq!(
            live_pointer_sql("shop"),
            "SELECT argMax(generation, set_at), count() FROM shop_meta.live"
        );
    }
}
