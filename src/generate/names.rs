//! Word lists for realistic master data: Chinese company and person names, places, industries.

use rand::Rng;

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何", "高", "林",
    "罗",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英", "华",
    "慧", "建国", "志强", "海燕", "晓东", "子涵", "浩然",
];
const CITIES: &[(&str, &str)] = &[
    ("上海", "east"),
    ("杭州", "east"),
    ("南京", "east"),
    ("苏州", "east"),
    ("北京", "north"),
    ("天津", "north"),
    ("石家庄", "north"),
    ("广州", "south"),
    ("深圳", "south"),
    ("厦门", "south"),
    ("武汉", "central"),
    ("长沙", "central"),
    ("郑州", "central"),
    ("成都", "southwest"),
    ("重庆", "southwest"),
    ("昆明", "southwest"),
    ("西安", "northwest"),
    ("兰州", "northwest"),
    ("沈阳", "northeast"),
    ("哈尔滨", "northeast"),
];
const REGIONS: &[(&str, &str)] = &[
    ("east", "华东"),
    ("north", "华北"),
    ("south", "华南"),
    ("central", "华中"),
    ("southwest", "西南"),
    ("northwest", "西北"),
    ("northeast", "东北"),
];
const BRAND: &[&str] = &[
    "华信", "恒通", "宏达", "金泰", "瑞丰", "中科", "新锐", "博远", "盛世", "天成", "鼎力", "联创", "汇丰", "永安",
    "启明", "东方",
];
const STREETS: &[&str] = &["人民路", "解放路", "中山路", "建设路", "和平路", "长江路", "科技路", "创业大道"];

/// Industries as stored (English codes) with the word used in a company name.
pub const INDUSTRIES: &[(&str, &str)] = &[
    ("manufacturing", "制造"),
    ("retail", "商贸"),
    ("wholesale", "贸易"),
    ("technology", "科技"),
    ("healthcare", "医药"),
    ("construction", "建设"),
    ("logistics", "物流"),
    ("education", "教育"),
];

pub fn person<R: Rng>(rng: &mut R) -> String {
    format!("{}{}", pick(rng, SURNAMES), pick(rng, GIVEN))
}

/// A city and its region code.
pub fn city<R: Rng>(rng: &mut R) -> (&'static str, &'static str) {
    *pick(rng, CITIES)
}

/// The Chinese name of a region code (华东, 华北, …), as the ERP stores it.
pub fn region_name(code: &str) -> &'static str {
    REGIONS.iter().find(|(c, _)| *c == code).map_or("华东", |(_, name)| name)
}

pub fn company<R: Rng>(rng: &mut R, city: &str, industry_word: &str) -> String {
    format!("{city}{}{industry_word}有限公司", pick(rng, BRAND))
}

pub fn address<R: Rng>(rng: &mut R, city: &str) -> String {
    format!("{city}市{}{}号", pick(rng, STREETS), rng.random_range(1..=999))
}

pub fn phone<R: Rng>(rng: &mut R) -> String {
    format!(
        "1{}{:02}-{:04}-{:04}",
        rng.random_range(3..=9),
        rng.random_range(0..100),
        rng.random_range(0..10000),
        rng.random_range(0..10000)
    )
}

pub fn pick<'a, R: Rng, T>(rng: &mut R, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}
