//! The report's two languages: labels, and how numbers are written (Chinese: 万 and 亿, ¥;
//! English: thousands separators, K/M/B, CNY).

use crate::config::ReportLang;

/// Every text of the report that is not data.
pub(crate) struct Labels {
    pub html_lang: &'static str,
    pub title: &'static str,
    pub subtitle: &'static str,
    pub as_of: &'static str,
    pub requested_missing: &'static str,
    pub no_marts: &'static str,
    pub missing_marts: &'static str,
    pub missing_value: &'static str,

    pub headline: &'static str,
    pub active_customers: &'static str,
    pub key_accounts: &'static str,
    pub key_value_share: &'static str,
    pub revenue: &'static str,
    pub net_value: &'static str,
    pub at_risk_key_accounts: &'static str,
    pub vs_previous: &'static str,
    pub vs_month_ago: &'static str,
    pub no_previous: &'static str,
    pub no_month_ago: &'static str,
    pub headline_note: &'static str,

    pub pareto: &'static str,
    pub pareto_top20: &'static str,
    pub pareto_key_accounts: &'static str,
    pub customers_axis: &'static str,
    pub value_axis: &'static str,
    pub pareto_empty: &'static str,
    pub legend_top20: &'static str,
    pub legend_key_accounts: &'static str,

    pub grids: &'static str,
    pub grid_fm: &'static str,
    pub grid_fr: &'static str,
    pub grid_note: &'static str,
    pub frequency: &'static str,
    pub monetary_score: &'static str,
    pub recency_score: &'static str,
    pub segments: &'static str,
    pub segment: &'static str,
    pub customers: &'static str,
    pub share_of_customers: &'static str,
    pub rfm_value: &'static str,
    pub share_of_value: &'static str,

    pub tonight: &'static str,
    pub tonight_first_night: &'static str,
    pub tonight_none: &'static str,
    pub tonight_shown: &'static str,
    pub download_csv: &'static str,
    pub sort_hint: &'static str,
    pub customer: &'static str,
    pub status: &'static str,
    pub clv: &'static str,
    pub p_alive: &'static str,
    pub days_since_last_order: &'static str,
    pub usual_gap: &'static str,
    pub complaints_90d: &'static str,
    pub churn_reasons: &'static str,
    pub status_new: &'static str,
    pub status_lost: &'static str,
    pub status_at_risk: &'static str,

    pub trends: &'static str,
    pub trends_one: &'static str,
    pub trend_key_accounts: &'static str,
    pub trend_value_share: &'static str,
    pub trend_at_risk: &'static str,
    pub trend_median_p_alive: &'static str,
    pub trend_data: &'static str,
    pub night: &'static str,

    pub migration: &'static str,
    pub migration_note: &'static str,
    pub migration_first_night: &'static str,
    pub from_to: &'static str,
    pub new_customers: &'static str,
    pub lost_customers: &'static str,

    pub service: &'static str,
    pub service_note: &'static str,
    pub key_account_group: &'static str,
    pub other_group: &'static str,
    pub contacts_per_customer: &'static str,
    pub complaints: &'static str,
    pub complaints_per_100: &'static str,
    pub open_complaints: &'static str,
    pub median_resolution_hours: &'static str,
    pub mean_satisfaction: &'static str,

    pub health: &'static str,
    pub health_run: &'static str,
    pub health_no_ledger: &'static str,
    pub source: &'static str,
    pub rows_read: &'static str,
    pub rows_loaded: &'static str,
    pub rows_rejected: &'static str,
    pub reject_reasons: &'static str,
    pub no_loads: &'static str,
    pub tests_summary: &'static str,
    pub tests_failed: &'static str,
    pub tests_warned: &'static str,
    pub model: &'static str,
    pub test: &'static str,
    pub failing_rows: &'static str,
    pub parameters: &'static str,
    pub parameter: &'static str,
    pub tonight_value: &'static str,
    pub previous_value: &'static str,
    pub drift: &'static str,
}

const EN: Labels = Labels {
    html_lang: "en",
    title: "Key-account report",
    subtitle: "Computed from the committed marts of the night",
    as_of: "Night of",
    requested_missing: "No key_accounts snapshot is committed for {asked}: this report shows {shown}, the newest before it.",
    no_marts: "The warehouse has no committed key_accounts snapshot{upto}, so there is nothing to report yet: run `keymart run` to publish the marts, then write the report again.",
    missing_marts: "This section needs the {marts} snapshot of {night}, which is not committed (a data test may have blocked it: see Data health).",
    missing_value: "—",

    headline: "Headline",
    active_customers: "Active customers",
    key_accounts: "Key accounts",
    key_value_share: "Key accounts' share of net value",
    revenue: "Revenue (value window)",
    net_value: "Net value (value window)",
    at_risk_key_accounts: "Key accounts at risk",
    vs_previous: "vs previous",
    vs_month_ago: "vs 30 days before",
    no_previous: "no previous snapshot (first night)",
    no_month_ago: "no snapshot 30 days before",
    headline_note: "Active: a completed purchase in the RFM window. Share: of positive net value. Revenue and net value: the value window of customer_value, after freight and cost to serve.",

    pareto: "The 80/20",
    pareto_top20: "The top 20 % of customers bring {share} of net value.",
    pareto_key_accounts: "The {count} key accounts ({customers} of customers) bring {share}.",
    customers_axis: "share of customers, by net value",
    value_axis: "cumulative share of net value",
    pareto_empty: "No customer has a positive net value tonight: there is no curve to draw.",
    legend_top20: "top 20 % of customers",
    legend_key_accounts: "key accounts",

    grids: "Value and churn grids",
    grid_fm: "Frequency × Monetary (value)",
    grid_fr: "Frequency × Recency (churn)",
    grid_note: "Quintile scores 1–5 of customer_rfm; each cell: customers and their revenue in the RFM window.",
    frequency: "F",
    monetary_score: "M",
    recency_score: "R",
    segments: "R×F segments",
    segment: "Segment",
    customers: "Customers",
    share_of_customers: "% of customers",
    rfm_value: "Revenue (RFM window)",
    share_of_value: "% of revenue",

    tonight: "What changed tonight",
    tonight_first_night: "First night: there is no previous snapshot, so every key account is new.",
    tonight_none: "No key account entered, left or became at risk since the previous snapshot.",
    tonight_shown: "Showing the first {shown} of {total} rows (at risk, lost, new; by net value).",
    download_csv: "Download CSV",
    sort_hint: "Click a column header to sort.",
    customer: "Customer",
    status: "Status",
    clv: "CLV",
    p_alive: "P(alive)",
    days_since_last_order: "Days since last order",
    usual_gap: "Usual gap (days)",
    complaints_90d: "Complaints (90 d)",
    churn_reasons: "Churn reasons",
    status_new: "new",
    status_lost: "lost",
    status_at_risk: "at risk",

    trends: "Trends",
    trends_one: "Only one snapshot is committed so far: the trends start with the second night.",
    trend_key_accounts: "Key accounts",
    trend_value_share: "Key accounts' share of net value",
    trend_at_risk: "Key accounts at risk",
    trend_median_p_alive: "Median P(alive), all customers (t-digest)",
    trend_data: "The figures",
    night: "Night",

    migration: "Segment migration",
    migration_note: "Share of each segment's active customers (rows) in each segment tonight (columns), since {previous}; cells: probability and customers.",
    migration_first_night: "First night: there is no previous snapshot, so every active customer enters from “new”.",
    from_to: "from \\ to",
    new_customers: "new",
    lost_customers: "lost",

    service: "Service to key accounts",
    service_note: "Call-centre service over the service window (service_quality), key accounts against the other customers.",
    key_account_group: "Key accounts",
    other_group: "Other customers",
    contacts_per_customer: "Contacts per customer",
    complaints: "Complaints",
    complaints_per_100: "Complaints per 100 customers",
    open_complaints: "Open complaints",
    median_resolution_hours: "Median resolution (hours)",
    mean_satisfaction: "Mean satisfaction (1–5)",

    health: "Data health",
    health_run: "Run {run} ({status}) committed this night's key_accounts.",
    health_no_ledger: "The ledger of run {run}, which committed this night, is not in the warehouse.",
    source: "Source",
    rows_read: "Rows read",
    rows_loaded: "Loaded",
    rows_rejected: "Rejected",
    reject_reasons: "Reasons",
    no_loads: "The run loaded no source for this night (its marts were computed from earlier loads).",
    tests_summary: "{tests} data tests ran on this night: {failed} failed, {warned} warned.",
    tests_failed: "failed (blocked publishing)",
    tests_warned: "warned",
    model: "Model",
    test: "Test",
    failing_rows: "Failing rows",
    parameters: "Model parameters and drift",
    parameter: "Parameter",
    tonight_value: "Tonight",
    previous_value: "Previous",
    drift: "Change",
};

const ZH: Labels = Labels {
    html_lang: "zh-CN",
    title: "大客户日报",
    subtitle: "依据当晚已提交的数据集市计算",
    as_of: "数据日期",
    requested_missing: "{asked} 没有已提交的 key_accounts 快照：本报告展示的是此前最新的 {shown}。",
    no_marts: "数据仓库中还没有已提交的 key_accounts 快照{upto}，暂无可报告的内容：请先运行 `keymart run` 发布数据集市，再生成报告。",
    missing_marts: "本节需要 {night} 的 {marts} 快照，但它尚未提交（可能被数据测试拦截，见“数据健康”）。",
    missing_value: "—",

    headline: "核心指标",
    active_customers: "活跃客户",
    key_accounts: "大客户数",
    key_value_share: "大客户净价值占比",
    revenue: "收入（价值窗口）",
    net_value: "净价值（价值窗口）",
    at_risk_key_accounts: "有流失风险的大客户",
    vs_previous: "较上次",
    vs_month_ago: "较30天前",
    no_previous: "无上一快照（首晚）",
    no_month_ago: "无30天前的快照",
    headline_note: "活跃：RFM 窗口内有已完成的购买。占比：占正净价值的比例。收入与净价值：customer_value 的价值窗口，已扣除运费与服务成本。",

    pareto: "二八分布",
    pareto_top20: "前 20% 的客户贡献了 {share} 的净价值。",
    pareto_key_accounts: "{count} 个大客户（占客户的 {customers}）贡献了 {share}。",
    customers_axis: "客户占比（按净价值排序）",
    value_axis: "累计净价值占比",
    pareto_empty: "今晚没有净价值为正的客户，无法绘制曲线。",
    legend_top20: "前 20% 的客户",
    legend_key_accounts: "大客户",

    grids: "价值与流失矩阵",
    grid_fm: "频次 × 金额（价值）",
    grid_fr: "频次 × 最近购买（流失）",
    grid_note: "customer_rfm 的 1–5 五分位评分；每格：客户数及其 RFM 窗口内收入。",
    frequency: "F",
    monetary_score: "M",
    recency_score: "R",
    segments: "R×F 客户分群",
    segment: "分群",
    customers: "客户数",
    share_of_customers: "客户占比",
    rfm_value: "收入（RFM 窗口）",
    share_of_value: "收入占比",

    tonight: "今晚的变化",
    tonight_first_night: "首晚：没有上一快照，所有大客户都记为新增。",
    tonight_none: "自上一快照以来，没有大客户新增、流失或出现流失风险。",
    tonight_shown: "显示前 {shown} 行，共 {total} 行（按风险、流失、新增及净价值排序）。",
    download_csv: "下载 CSV",
    sort_hint: "点击列标题排序。",
    customer: "客户",
    status: "状态",
    clv: "客户终身价值",
    p_alive: "存活概率",
    days_since_last_order: "距上次下单天数",
    usual_gap: "通常间隔（天）",
    complaints_90d: "投诉（90天）",
    churn_reasons: "流失原因",
    status_new: "新增",
    status_lost: "流失",
    status_at_risk: "有风险",

    trends: "趋势",
    trends_one: "目前只有一个已提交的快照：趋势从第二晚开始。",
    trend_key_accounts: "大客户数",
    trend_value_share: "大客户净价值占比",
    trend_at_risk: "有流失风险的大客户",
    trend_median_p_alive: "存活概率中位数（全部客户，t-digest）",
    trend_data: "数据",
    night: "日期",

    migration: "分群迁移",
    migration_note: "自 {previous} 以来，各分群（行）的活跃客户今晚所在分群（列）的比例；每格：概率与客户数。",
    migration_first_night: "首晚：没有上一快照，所有活跃客户都来自“新进”。",
    from_to: "从 \\ 到",
    new_customers: "新进",
    lost_customers: "流失",

    service: "大客户服务",
    service_note: "服务窗口内的呼叫中心服务（service_quality），大客户与其他客户对比。",
    key_account_group: "大客户",
    other_group: "其他客户",
    contacts_per_customer: "人均联系次数",
    complaints: "投诉",
    complaints_per_100: "每百客户投诉",
    open_complaints: "未解决投诉",
    median_resolution_hours: "解决时长中位数（小时）",
    mean_satisfaction: "平均满意度（1–5）",

    health: "数据健康",
    health_run: "本晚的 key_accounts 由运行 {run}（{status}）提交。",
    health_no_ledger: "提交本晚数据的运行 {run} 的台账不在数据仓库中。",
    source: "数据源",
    rows_read: "读取行数",
    rows_loaded: "入库",
    rows_rejected: "拒绝",
    reject_reasons: "原因",
    no_loads: "该运行没有为本晚加载任何数据源（数据集市由此前的加载计算）。",
    tests_summary: "本晚运行了 {tests} 个数据测试：{failed} 个失败，{warned} 个告警。",
    tests_failed: "失败（阻止发布）",
    tests_warned: "告警",
    model: "模型",
    test: "测试",
    failing_rows: "不通过行数",
    parameters: "模型参数与漂移",
    parameter: "参数",
    tonight_value: "今晚",
    previous_value: "上次",
    drift: "变化",
};

pub(crate) fn labels(lang: ReportLang) -> &'static Labels {
    match lang {
        ReportLang::En => &EN,
        ReportLang::Zh => &ZH,
    }
}

/// The R×F segment names of customer_rfm in the report's language.
pub(crate) fn segment(lang: ReportLang, name: &str) -> String {
    if lang == ReportLang::En {
        return name.to_string();
    }
    match name {
        "Champions" => "冠军客户",
        "Loyal" => "忠诚客户",
        "Potential Loyalists" => "潜力客户",
        "New" => "新客户",
        "Promising" => "有望客户",
        "Need Attention" => "需关注",
        "About to Sleep" => "即将沉睡",
        "At Risk" => "流失风险",
        "Can't Lose" => "不能失去",
        "Hibernating" => "休眠客户",
        other => other,
    }
    .to_string()
}

/// How numbers are written in one language.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Numbers {
    pub lang: ReportLang,
}

impl Numbers {
    /// A count: `12,345`; in Chinese from ten thousand on `1.23万`, from 10⁸ `1.23亿`.
    pub fn count(&self, n: f64) -> String {
        match self.lang {
            ReportLang::Zh if n.abs() >= 1e4 => chinese_units(n),
            _ => grouped(n, 0),
        }
    }

    /// An amount in CNY: `¥1,234`, `¥12.35万`, `¥1.23亿`; `CNY 123,457`, `CNY 1.23M`, `CNY 1.23B`.
    pub fn money(&self, amount: f64) -> String {
        let sign = if amount < 0.0 { "−" } else { "" };
        let amount = amount.abs();
        match self.lang {
            ReportLang::Zh if amount >= 1e4 => format!("{sign}¥{}", chinese_units(amount)),
            ReportLang::Zh => format!("{sign}¥{}", grouped(amount, 0)),
            ReportLang::En if amount >= 1e9 => format!("{sign}CNY {}B", significant(amount / 1e9)),
            ReportLang::En if amount >= 1e6 => format!("{sign}CNY {}M", significant(amount / 1e6)),
            ReportLang::En => format!("{sign}CNY {}", grouped(amount, 0)),
        }
    }

    /// A share: `80.1%`.
    pub fn percent(&self, share: f64) -> String {
        format!("{}%", trim_zeros(&format!("{:.1}", share * 100.0)))
    }

    /// A decimal number with `digits` after the point (grouped).
    pub fn decimal(&self, x: f64, digits: usize) -> String {
        grouped(x, digits)
    }

    /// A relative change: `+3.2%`, `−0.05%` (two decimals under 1 %), `±0%` for none.
    pub fn change(&self, change: f64) -> String {
        format!("{}%", signed(change * 100.0))
    }

    /// A change of a share, in percentage points.
    pub fn points(&self, change: f64) -> String {
        let unit = match self.lang {
            ReportLang::Zh => "个百分点",
            ReportLang::En => " pp",
        };
        format!("{}{unit}", signed(change * 100.0))
    }
}

/// A signed amount of percent or points: one decimal from 1 on, two below, `<0.01` below that.
fn signed(x: f64) -> String {
    let sign = if x > 0.0 {
        "+"
    } else if x < 0.0 {
        "−"
    } else {
        return "±0".to_string();
    };
    let size = x.abs();
    let digits = if size >= 1.0 {
        1
    } else if size >= 0.01 {
        2
    } else {
        return format!("{sign}<0.01");
    };
    format!("{sign}{}", trim_zeros(&format!("{size:.digits$}")))
}

/// `1.23万` or `1.23亿` (three significant digits).
fn chinese_units(n: f64) -> String {
    let sign = if n < 0.0 { "−" } else { "" };
    let n = n.abs();
    if n >= 1e8 { format!("{sign}{}亿", significant(n / 1e8)) } else { format!("{sign}{}万", significant(n / 1e4)) }
}

/// Three significant digits for a number of units (1 ≤ x < 10 000): `1.23`, `12.3`, `123`, `1,234`.
fn significant(x: f64) -> String {
    let digits = if x < 10.0 {
        2
    } else if x < 100.0 {
        1
    } else {
        0
    };
    trim_zeros(&grouped(x, digits))
}

fn trim_zeros(text: &str) -> String {
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text.to_string() }
}

/// `x` with `digits` decimals and thousands separators.
fn grouped(x: f64, digits: usize) -> String {
    let text = format!("{:.*}", digits, x.abs());
    let (whole, fraction) = text.split_once('.').map_or((text.as_str(), None), |(w, f)| (w, Some(f)));
    let mut out = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(fraction);
    }
    let negative = x < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0');
    if negative { format!("−{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_numbers_use_wan_and_yi() {
        let zh = Numbers { lang: ReportLang::Zh };
        assert_eq!(zh.count(9999.0), "9,999");
        assert_eq!(zh.count(12345.0), "1.23万");
        assert_eq!(zh.count(1_000_000.0), "100万");
        assert_eq!(zh.money(123_456_789.0), "¥1.23亿");
        assert_eq!(zh.money(52_300.0), "¥5.23万");
        assert_eq!(zh.money(-880.4), "−¥880");
        assert_eq!(zh.points(0.0123), "+1.2个百分点");
    }

    #[test]
    fn english_numbers_use_separators_and_millions() {
        let en = Numbers { lang: ReportLang::En };
        assert_eq!(en.count(1_234_567.0), "1,234,567");
        assert_eq!(en.money(123_456.7), "CNY 123,457");
        assert_eq!(en.money(2_345_000.0), "CNY 2.35M");
        assert_eq!(en.money(-1_500_000_000.0), "−CNY 1.5B");
        assert_eq!(en.percent(0.8012), "80.1%");
        assert_eq!(en.percent(0.8), "80%");
        assert_eq!(en.change(-0.0304), "−3%");
        assert_eq!(en.change(0.000508), "+0.05%");
        assert_eq!(en.change(-0.00000001), "−<0.01%");
        assert_eq!(en.change(0.0), "±0%");
        assert_eq!(en.points(0.0), "±0 pp");
        assert_eq!(en.decimal(-1234.567, 2), "−1,234.57");
    }
}
