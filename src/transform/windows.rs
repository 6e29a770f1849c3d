//! How a model's SQL reads `$as_of`. An incremental model may depend on the date only through
//! comparisons of its rows' dates with `$as_of`, or with `$as_of` moved by a constant (a window
//! start such as `$as_of - $rfm_window_days`): then a row's part in the result changes only on
//! the nights when the date passes one of its dates plus such a constant, and keymart can tell
//! which keys those are (`incremental`). Any other use (`$as_of - first_purchase` as a value)
//! changes every key every night.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Statement, Value, ValueWithSpan, Visit, Visitor, visit_expressions,
};

const AS_OF: &str = "$as_of";

/// A constant `$as_of` is compared at: `$as_of - offset` (a window start, `offset` SQL text
/// such as `$rfm_window_days` or `2 * $churn_window_days`), or `$as_of` itself (`offset` "0").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    pub offset: String,
    /// -1 for `$as_of + offset`.
    pub sign: i64,
}

/// Every `$as_of` of one statement, sorted into comparisons and other uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AsOfUses {
    pub windows: BTreeSet<Window>,
    /// Uses outside a comparison: line, column and the expression around them.
    pub elsewhere: Vec<(u64, u64, String)>,
}

pub fn as_of_uses(statement: &Statement) -> AsOfUses {
    let mut uses = AsOfUses::default();
    let mut compared = BTreeSet::new();
    let _ = visit_expressions(statement, |expr| {
        for operand in compared_operands(expr) {
            if let Some((window, at)) = as_of_operand(operand) {
                uses.windows.insert(window);
                compared.insert(at);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let mut others = OtherUses { compared, around: Vec::new(), found: Vec::new() };
    let _ = statement.visit(&mut others);
    uses.elsewhere = others.found;
    uses
}

/// Finds each `$as_of` outside a comparison, with the expression it is part of.
struct OtherUses {
    compared: BTreeSet<(u64, u64)>,
    /// The expressions being visited, outermost first (as text).
    around: Vec<String>,
    found: Vec<(u64, u64, String)>,
}

impl Visitor for OtherUses {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Some(at) = as_of_at(expr)
            && !self.compared.contains(&at)
        {
            let around = self.around.last().cloned().unwrap_or_else(|| expr.to_string());
            self.found.push((at.0, at.1, around));
        }
        self.around.push(expr.to_string());
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.around.pop();
        ControlFlow::Continue(())
    }
}

/// The operands of a comparison (`a <= b`, `a BETWEEN b AND c`); none for other expressions.
fn compared_operands(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::BinaryOp {
            left,
            op:
                BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq
                | BinaryOperator::Eq
                | BinaryOperator::NotEq,
            right,
        } => vec![left, right],
        Expr::Between { expr, low, high, .. } => vec![expr, low, high],
        _ => Vec::new(),
    }
}

/// `$as_of`, `$as_of - c` or `$as_of + c` with `c` free of `$as_of`: the window and where the
/// placeholder is.
fn as_of_operand(expr: &Expr) -> Option<(Window, (u64, u64))> {
    match expr {
        Expr::Nested(inner) => as_of_operand(inner),
        Expr::BinaryOp { left, op: op @ (BinaryOperator::Minus | BinaryOperator::Plus), right } => {
            let at = as_of_at(left.as_ref().strip_nested())?;
            if mentions_as_of(right) {
                return None;
            }
            let sign = if *op == BinaryOperator::Minus { 1 } else { -1 };
            Some((Window { offset: right.to_string(), sign }, at))
        }
        other => as_of_at(other).map(|at| (Window { offset: "0".into(), sign: 1 }, at)),
    }
}

/// Line and column of a bare `$as_of`.
fn as_of_at(expr: &Expr) -> Option<(u64, u64)> {
    match expr {
        Expr::Value(ValueWithSpan { value: Value::Placeholder(name), span }) if name == AS_OF => {
            Some((span.start.line, span.start.column))
        }
        _ => None,
    }
}

fn mentions_as_of(expr: &Expr) -> bool {
    visit_expressions(expr, |e| if as_of_at(e).is_some() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        .is_break()
}

trait StripNested {
    fn strip_nested(&self) -> &Expr;
}

impl StripNested for Expr {
    fn strip_nested(&self) -> &Expr {
        match self {
            Expr::Nested(inner) => inner.strip_nested(),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn uses(sql: &str) -> AsOfUses {
        as_of_uses(&Parser::parse_sql(&GenericDialect {}, sql).expect("SQL parses").remove(0))
    }

    fn window(offset: &str, sign: i64) -> Window {
        Window { offset: offset.into(), sign }
    }

    #[test]
    fn comparisons_with_the_date_and_window_starts_are_windows() {
        let found = uses(
            "SELECT count(CASE WHEN d > $as_of - 2 * $w THEN 1 END) FROM t \
             WHERE d <= $as_of AND ($as_of + 1) > e AND f BETWEEN ($as_of - $w) AND $as_of",
        );
        assert_eq!(found.elsewhere, vec![]);
        assert_eq!(
            found.windows.into_iter().collect::<Vec<_>>(),
            vec![window("$w", 1), window("0", 1), window("1", -1), window("2 * $w", 1)]
        );
    }

    #[test]
    fn the_date_as_a_value_is_reported_where_it_is() {
        let found =
            uses("SELECT customer_id,\n  CAST($as_of - min(d) AS DOUBLE) AS t FROM t WHERE d <= $as_of GROUP BY 1");
        assert_eq!(found.windows.into_iter().collect::<Vec<_>>(), vec![window("0", 1)]);
        assert_eq!(found.elsewhere, vec![(2, 8, "$as_of - min(d)".to_string())]);
        // A window whose constant itself reads the date is not a window.
        let found = uses("SELECT 1 FROM t WHERE d > $as_of - ($as_of - e)");
        assert_eq!(found.elsewhere.len(), 2, "{found:?}");
    }
}
