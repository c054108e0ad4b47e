//! `docs/reasons.md` and `src/reason.rs` list the same words: every reason the page lists exists in
//! the code (a refusal with the status the page gives), and every word the code can write is on
//! the page. A reason added, renamed or removed on one side only fails here.

use mtls_gateway::reason::{
    Attempt, Cache, ClusterOp, ClusterResult, Cut, Failure, ForwardedResult, HandshakeRefusal, Introspection, Limit,
    Party, ProofResult, Reason, RefusedBy, StatusClass, TunnelEnd,
};
use std::collections::{BTreeMap, BTreeSet};

const PAGE: &str = include_str!("../docs/reasons.md");

/// One table of the page, under its `##` heading: the header cells and each row's cells.
struct Table {
    section: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// A row's cells; `\|` is a pipe inside a cell.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|').replace("\\|", "\u{0}");
    inner.split('|').map(|c| c.trim().replace('\u{0}', "|")).collect()
}

fn tables(page: &str) -> Vec<Table> {
    let mut out: Vec<Table> = Vec::new();
    let (mut section, mut in_table) = (String::new(), false);
    for line in page.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading.trim().to_string();
        }
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        let row = cells(line);
        if row.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) {
            continue; // the separator line
        }
        match in_table {
            false => out.push(Table { section: section.clone(), header: row, rows: Vec::new() }),
            true => out.last_mut().expect("a table began").rows.push(row),
        }
        in_table = true;
    }
    out
}

/// The words in backticks in a cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

fn column(t: &Table, name: &str) -> Option<usize> {
    t.header.iter().position(|h| h == name || h.trim_end_matches("(s)") == name)
}

/// Every (reason, status) pair of the tables that have both columns.
fn documented_refusals(tables: &[Table]) -> BTreeSet<(String, u16)> {
    let mut out = BTreeSet::new();
    for t in tables {
        let (Some(status), Some(reason)) = (column(t, "status"), column(t, "reason")) else { continue };
        for row in &t.rows {
            let code: u16 = row[status].parse().unwrap_or_else(|_| panic!("status of {row:?}"));
            out.extend(ticked(&row[reason]).into_iter().map(|r| (r, code)));
        }
    }
    out
}

/// The words in the first column of the tables of a `##` section.
fn documented_words(tables: &[Table], section: &str) -> BTreeSet<String> {
    let words: BTreeSet<String> = tables
        .iter()
        .filter(|t| t.section == section)
        .flat_map(|t| t.rows.iter().flat_map(|r| ticked(&r[0])))
        .collect();
    assert!(!words.is_empty(), "docs/reasons.md has no table under `## {section}`");
    words
}

fn words<'a>(list: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    list.into_iter().map(str::to_string).collect()
}

fn same(section: &str, documented: &BTreeSet<String>, code: &BTreeSet<String>) {
    let missing: Vec<_> = code.difference(documented).collect();
    let unknown: Vec<_> = documented.difference(code).collect();
    assert!(missing.is_empty(), "`## {section}`: the code writes these, the page does not list them: {missing:?}");
    assert!(unknown.is_empty(), "`## {section}`: the page lists these, the code never writes them: {unknown:?}");
}

#[test]
fn every_refusal_reason_is_documented_with_its_status_and_the_other_way_round() {
    let documented = documented_refusals(&tables(PAGE));
    let code: BTreeSet<(String, u16)> = Reason::all().map(|r| (r.as_str().to_string(), r.status())).collect();
    let missing: Vec<_> = code.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&code).collect();
    assert!(missing.is_empty(), "refusals the page does not list with this status: {missing:?}");
    assert!(unknown.is_empty(), "refusals the page lists that the code does not give with this status: {unknown:?}");
}

#[test]
fn every_other_family_is_documented_and_the_other_way_round() {
    let tables = tables(PAGE);
    let stages = RefusedBy::STAGES.iter().map(|r| r.as_str());
    let families: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        ("Refused by", words(stages)),
        ("Ended by", words(Party::ALL.iter().map(|p| p.as_str()))),
        ("Connection cuts", words(Cut::ALL.iter().map(|c| c.as_str()))),
        ("Handshake refusals", words(HandshakeRefusal::ALL.iter().map(|h| h.as_str()))),
        (
            "Forwarded certificates",
            words(ForwardedResult::all().filter(|r| !matches!(r, ForwardedResult::Refused(_))).map(|r| r.as_str())),
        ),
        ("Passthrough ends", words(TunnelEnd::ALL.iter().map(|e| e.as_str()))),
        ("Upstream attempt results", words(Attempt::ALL.iter().map(|a| a.as_str()))),
        ("Upstream retry reasons", words(Failure::ALL.iter().map(|f| f.as_str()))),
        ("Token cache lookups", words(Cache::ALL.iter().map(|c| c.as_str()))),
        ("Shared-state operations", words(ClusterOp::ALL.iter().map(|o| o.as_str()))),
        ("Shared-state call results", words(ClusterResult::ALL.iter().map(|r| r.as_str()))),
        ("Status classes", words(StatusClass::ALL.iter().map(|c| c.as_str()))),
    ]);
    for (section, code) in &families {
        same(section, &documented_words(&tables, section), code);
    }
    let known: BTreeSet<&str> =
        families.keys().copied().chain(["Refusals", "DPoP proof results", "Introspection results"]).collect();
    for t in &tables {
        assert!(known.contains(t.section.as_str()), "`## {}` is checked against no family of src/reason.rs", t.section);
    }
}

/// The proof and introspection results are mostly refusal reasons; their tables list the others.
#[test]
fn results_made_of_refusal_reasons_list_what_is_not_one() {
    let tables = tables(PAGE);
    let refusals: BTreeSet<String> = Reason::all().map(|r| r.as_str().to_string()).collect();
    for (section, code) in [
        ("DPoP proof results", words(ProofResult::all().map(ProofResult::as_str))),
        ("Introspection results", words(Introspection::all().map(Introspection::as_str))),
    ] {
        let documented = documented_words(&tables, section);
        let own: BTreeSet<String> =
            code.iter().filter(|w| !refusals.contains(*w) || documented.contains(*w)).cloned().collect();
        same(section, &documented, &own);
    }
    let limits: BTreeSet<String> = words(Limit::ALL.iter().map(|l| l.as_str()));
    assert!(limits.is_subset(&refusals), "each 429's reason is its limit's name");
}

/// The limits tables name the reason each limit is counted under: each must be one the code writes.
#[test]
fn the_limits_tables_name_existing_reasons() {
    let cuts = words(Cut::ALL.iter().map(|c| c.as_str()));
    let refusals: BTreeSet<String> = Reason::all().map(|r| r.as_str().to_string()).collect();
    let limits = words(Limit::ALL.iter().map(|l| l.as_str()));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for page in ["docs/limits.md", "README.md"] {
        let text = std::fs::read_to_string(root.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        for t in tables(&text) {
            let Some(col) = column(&t, "metric reason") else { continue };
            for word in t.rows.iter().flat_map(|r| ticked(&r[col])) {
                seen += 1;
                let known = match word.strip_prefix("gateway_rate_limited_total{limit=\"") {
                    Some(rest) => limits.contains(rest.trim_end_matches("\"}")),
                    None => cuts.contains(&word) || refusals.contains(&word),
                };
                assert!(known, "{page}: `{word}` in the `metric reason` column is no reason of src/reason.rs");
            }
        }
    }
    assert!(seen > 0, "no `metric reason` column found in docs/limits.md or README.md");
}
