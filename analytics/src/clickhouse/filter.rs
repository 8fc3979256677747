//! Filters: DataFusion expressions as ClickHouse SQL, pushed only where ClickHouse's answer
//! is exactly DataFusion's (two-valued, nullable columns guarded; see the module docs of
//! `clickhouse`), before an aggregate's GROUP BY on its keys or after it on its sums.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::{Between, InList};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use super::layout::{Kind, Layout, alias};

/// A pushed filter's ClickHouse text may be at most this long: a query must stay under
/// 18.16's 256 KiB `max_query_size`. A longer filter (a huge IN list) is left to DataFusion.
const MAX_FILTER_SQL: usize = 8 * 1024;

/// Where a filter is evaluated.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    /// On stored rows (a raw table, or an aggregate's keys before its GROUP BY).
    Base,
    /// On an aggregate's merged rows, by alias.
    Merged,
    /// On the rows of a pushed sub-plan, whose columns have these names in its SQL.
    Named(&'a [String]),
}

struct Translator<'a> {
    layout: &'a Layout,
    scope: Scope<'a>,
    /// The columns the filter reads.
    used: Vec<usize>,
}

/// A string as a ClickHouse string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A scaled decimal as text: `-1234` at scale 2 is `-12.34`.
fn decimal_text(value: i128, scale: i8) -> Option<String> {
    let scale = u32::try_from(scale).ok()?;
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        return Some(format!("{sign}{digits}"));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    Some(format!("{sign}{int}.{frac}"))
}

fn integer(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::Int8(Some(v)) => i128::from(*v),
        ScalarValue::Int16(Some(v)) => i128::from(*v),
        ScalarValue::Int32(Some(v)) => i128::from(*v),
        ScalarValue::Int64(Some(v)) => i128::from(*v),
        ScalarValue::UInt8(Some(v)) => i128::from(*v),
        ScalarValue::UInt16(Some(v)) => i128::from(*v),
        ScalarValue::UInt32(Some(v)) => i128::from(*v),
        ScalarValue::UInt64(Some(v)) => i128::from(*v),
        _ => return None,
    })
}

/// A literal compared with a column of `kind`, as ClickHouse SQL of the column's own type;
/// `None` for NULL, another type, or a value the column's type cannot hold.
fn literal(kind: Kind, e: &Expr) -> Option<String> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    match kind {
        Kind::Str => match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Some(quote(s)),
            _ => None,
        },
        Kind::Bytes => None,
        Kind::Int32 => integer(v)
            .filter(|v| i32::try_from(*v).is_ok())
            .map(|v| v.to_string()),
        Kind::UInt64 => integer(v)
            .filter(|v| u64::try_from(*v).is_ok())
            .map(|v| v.to_string()),
        Kind::Int64 => integer(v)
            .filter(|v| i64::try_from(*v).is_ok())
            .map(|v| v.to_string()),
        Kind::Millis => match v {
            ScalarValue::TimestampMillisecond(Some(ms), _) => Some(ms.to_string()),
            _ => None,
        },
        Kind::Date => match v {
            ScalarValue::Date32(Some(day)) => Some(day.to_string()),
            _ => None,
        },
        Kind::Decimal { wide, scale } => match v {
            ScalarValue::Decimal128(Some(value), _, s) if *s == scale => {
                let digits = if wide { 38 } else { 18 };
                if value.unsigned_abs() >= 10u128.pow(digits) {
                    return None;
                }
                let text = decimal_text(*value, scale)?;
                let function = if wide { "toDecimal128" } else { "toDecimal64" };
                Some(format!("{function}('{text}', {scale})"))
            }
            _ => None,
        },
    }
}

fn comparison(op: Operator) -> Option<&'static str> {
    Some(match op {
        Operator::Eq => "=",
        Operator::NotEq => "!=",
        Operator::Lt => "<",
        Operator::LtEq => "<=",
        Operator::Gt => ">",
        Operator::GtEq => ">=",
        _ => return None,
    })
}

impl Translator<'_> {
    /// A plain column this scope can filter on: its index and SQL.
    fn column(&mut self, e: &Expr) -> Option<(usize, String)> {
        let Expr::Column(c) = e else {
            return None;
        };
        let i = self.layout.index(&c.name)?;
        let col = &self.layout.cols[i];
        if col.kind == Kind::Bytes {
            return None;
        }
        let sql = match self.scope {
            Scope::Base if self.layout.is_agg() && !col.key => return None,
            Scope::Base => self.layout.base_expr(i),
            Scope::Merged => alias(i),
            Scope::Named(names) => names.get(i)?.clone(),
        };
        self.used.push(i);
        Some((i, sql))
    }

    /// ClickHouse SQL that is 1 exactly when DataFusion evaluates `e` to `want` (TRUE, or
    /// FALSE), and 0 otherwise, NULL included: so it means the same under NOT and in WHERE
    /// on every ClickHouse version. `None` if `e` is not something we push.
    fn truth(&mut self, e: &Expr, want: bool) -> Option<String> {
        match e {
            Expr::Not(inner) => self.truth(inner, !want),
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(op, Operator::And | Operator::Or) =>
            {
                let l = self.truth(left, want)?;
                let r = self.truth(right, want)?;
                // TRUE of AND (FALSE of OR) needs both sides so; the others either.
                let joiner = if (*op == Operator::And) == want {
                    "AND"
                } else {
                    "OR"
                };
                Some(format!("({l} {joiner} {r})"))
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let symbol = comparison(*op)?;
                let (i, col, lit, symbol) = if let Some((i, col)) = self.column(left) {
                    (i, col, right, symbol)
                } else {
                    let (i, col) = self.column(right)?;
                    let swapped = comparison(op.swap()?)?;
                    (i, col, left, swapped)
                };
                let lit = literal(self.layout.cols[i].kind, lit)?;
                Some(self.atom(i, &col, format!("{col} {symbol} {lit}"), want))
            }
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let (i, col) = self.column(expr)?;
                let kind = self.layout.cols[i].kind;
                let low = literal(kind, low)?;
                let high = literal(kind, high)?;
                let sql = format!("{col} >= {low} AND {col} <= {high}");
                Some(self.atom(i, &col, sql, want != *negated))
            }
            Expr::InList(InList {
                expr,
                list,
                negated,
            }) => {
                if list.is_empty() {
                    return None;
                }
                let (i, col) = self.column(expr)?;
                let kind = self.layout.cols[i].kind;
                let values = list
                    .iter()
                    .map(|v| literal(kind, v))
                    .collect::<Option<Vec<_>>>()?;
                let sql = format!("{col} IN ({})", values.join(", "));
                Some(self.atom(i, &col, sql, want != *negated))
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let (_, col) = self.column(inner)?;
                let is_null = matches!(e, Expr::IsNull(_)) == want;
                Some(if is_null {
                    format!("isNull({col})")
                } else {
                    format!("isNotNull({col})")
                })
            }
            _ => None,
        }
    }

    /// `sql`, a predicate on column `i` that is TRUE or FALSE whenever the column is not
    /// NULL, as "is `want`": NULL columns give 0 either way, as in DataFusion where the
    /// predicate is then NULL.
    fn atom(&self, i: usize, col: &str, sql: String, want: bool) -> String {
        let sql = if want { sql } else { format!("NOT ({sql})") };
        if self.layout.cols[i].nullable {
            format!("(isNotNull({col}) AND ifNull({sql}, 0))")
        } else {
            format!("({sql})")
        }
    }
}

/// Where a pushed filter goes and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Placement {
    /// WHERE on the stored rows.
    Base(String),
    /// WHERE on an aggregate's merged rows, reading these columns.
    Merged(String, Vec<usize>),
}

/// `filter` as ClickHouse SQL for `layout`, if ClickHouse answers it exactly as DataFusion.
pub(super) fn translate(layout: &Layout, filter: &Expr) -> Option<Placement> {
    let mut t = Translator {
        layout,
        scope: Scope::Base,
        used: Vec::new(),
    };
    let placement = match t.truth(filter, true) {
        Some(sql) => Placement::Base(sql),
        None if layout.is_agg() => {
            let mut t = Translator {
                layout,
                scope: Scope::Merged,
                used: Vec::new(),
            };
            let sql = t.truth(filter, true)?;
            Placement::Merged(sql, t.used)
        }
        None => return None,
    };
    let len = match &placement {
        Placement::Base(sql) | Placement::Merged(sql, _) => sql.len(),
    };
    (len <= MAX_FILTER_SQL).then_some(placement)
}

/// `filter` over the rows of a pushed sub-plan as ClickHouse SQL, if ClickHouse answers it
/// exactly as DataFusion: `layout` holds the sub-plan's columns (as DataFusion names them,
/// with their kinds), `names` their names in its SQL.
pub(super) fn translate_named(layout: &Layout, names: &[String], filter: &Expr) -> Option<String> {
    let mut t = Translator {
        layout,
        scope: Scope::Named(names),
        used: Vec::new(),
    };
    let sql = t.truth(filter, true)?;
    (sql.len() <= MAX_FILTER_SQL).then_some(sql)
}

#[cfg(test)]
mod tests {
    use arrow_schema::DataType;
    use datafusion::logical_expr::{col, lit};
    use shoplens_contract::tables::RawTable;

    use super::*;
    use crate::read_model::Table;

    fn ms(v: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    fn money(cents: i128) -> Expr {
        lit(ScalarValue::Decimal128(Some(cents), 18, 2))
    }

    fn base(table: Table, filter: &Expr) -> Option<String> {
        match translate(&Layout::new(table).unwrap(), filter)? {
            Placement::Base(sql) => Some(sql),
            Placement::Merged(..) => panic!("{filter} should go before the GROUP BY"),
        }
    }

    const ORDERS: Table = Table::Raw(RawTable::Orders);
    const PAYMENTS: Table = Table::Raw(RawTable::Payments);

    #[test]
    fn string_literals_are_escaped() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote(r"it's a \ test"), r"'it\'s a \\ test'");
        assert_eq!(quote("a\nb\0"), r"'a\nb\0'");
        assert_eq!(quote("Zürich"), "'Zürich'");
        assert_eq!(
            base(ORDERS, &col("customer_id").eq(lit("x' OR 1=1 --"))).unwrap(),
            r"(`customer_id` = 'x\' OR 1=1 --')"
        );
    }

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(decimal_text(1234, 2).unwrap(), "12.34");
        assert_eq!(decimal_text(-5, 2).unwrap(), "-0.05");
        assert_eq!(decimal_text(0, 2).unwrap(), "0.00");
        assert_eq!(decimal_text(7, 0).unwrap(), "7");
        assert_eq!(
            decimal_text(i128::MIN, 2).unwrap(),
            "-1701411834604692317316873037158841057.28"
        );
        assert_eq!(
            base(ORDERS, &col("total").gt_eq(money(1050))).unwrap(),
            "(`total` >= toDecimal64('10.50', 2))"
        );
        // A value Decimal(18, 2) cannot hold, or another scale: left to DataFusion.
        assert_eq!(base(ORDERS, &col("total").gt(money(10i128.pow(18)))), None);
        assert_eq!(
            base(
                ORDERS,
                &col("total").gt(lit(ScalarValue::Decimal128(Some(1), 18, 3)))
            ),
            None
        );
    }

    #[test]
    fn comparisons_in_either_order_and_ranges() {
        assert_eq!(
            base(ORDERS, &ms(1000).lt(col("occurred_at"))).unwrap(),
            "(`occurred_at` > 1000)"
        );
        assert_eq!(
            base(ORDERS, &col("line_count").between(lit(1i32), lit(3i32))).unwrap(),
            "(`line_count` >= 1 AND `line_count` <= 3)"
        );
        assert_eq!(
            base(ORDERS, &col("line_count").not_between(lit(1i32), lit(3i32))).unwrap(),
            "(NOT (`line_count` >= 1 AND `line_count` <= 3))"
        );
        assert_eq!(
            base(
                ORDERS,
                &col("order_id").in_list(vec![lit("a"), lit("b")], false)
            )
            .unwrap(),
            "(`order_id` IN ('a', 'b'))"
        );
        // An Int32 column with a literal it cannot hold.
        assert_eq!(base(ORDERS, &col("line_count").eq(lit(1i64 << 40))), None);
    }

    #[test]
    fn nullable_columns_are_guarded_so_null_never_passes() {
        // 18.16 says `NULL NOT IN (..)` is 1; DataFusion says NULL. Guarded, both drop it.
        assert_eq!(
            base(PAYMENTS, &col("method").in_list(vec![lit("card")], true)).unwrap(),
            "(isNotNull(`method`) AND ifNull(NOT (`method` IN ('card')), 0))"
        );
        // NOT of AND: FALSE of either side.
        assert_eq!(
            base(
                PAYMENTS,
                &Expr::Not(Box::new(
                    col("method")
                        .eq(lit("card"))
                        .and(col("status").eq(lit("Failed")))
                ))
            )
            .unwrap(),
            "((isNotNull(`method`) AND ifNull(NOT (`method` = 'card'), 0)) OR \
             (NOT (`status` = 'Failed')))"
        );
        assert_eq!(
            base(
                PAYMENTS,
                &col("reason").is_null().or(col("amount").gt(money(0)))
            )
            .unwrap(),
            "(isNull(`reason`) OR \
             (isNotNull(`amount`) AND ifNull(`amount` > toDecimal64('0.00', 2), 0)))"
        );
        assert_eq!(
            base(PAYMENTS, &Expr::Not(Box::new(col("reason").is_not_null()))).unwrap(),
            "isNull(`reason`)"
        );
    }

    #[test]
    fn what_clickhouse_might_answer_differently_is_not_pushed() {
        let unsupported = [
            col("order_id").like(lit("a%")),
            col("total").eq(col("total")),
            col("order_id").eq(lit(ScalarValue::Utf8(None))),
            col("order_id").in_list(vec![lit("a"), lit(ScalarValue::Utf8(None))], false),
            col("line_count").eq(lit("3")),
            col("occurred_at").gt(lit(ScalarValue::TimestampSecond(Some(1), None))),
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(col("line_count")),
                DataType::Int64,
            ))
            .eq(lit(3i64)),
            col("nope").eq(lit(1i32)),
            col("order_id").in_list(
                (0..2000).map(|i| lit(format!("order-{i:08}"))).collect(),
                false,
            ),
        ];
        for f in &unsupported {
            assert_eq!(base(ORDERS, f), None, "{f}");
        }
        // The payload's bytes may differ from its text.
        let letters = Layout::new(Table::DeadLetters).unwrap();
        assert_eq!(translate(&letters, &col("payload").eq(lit("x"))), None);
        assert!(translate(&letters, &col("offset").gt(lit(3u64))).is_some());
    }
}
