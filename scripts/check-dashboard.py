#!/usr/bin/env python3
"""Checks that the Grafana dashboard and the Prometheus alert rules only use metrics the gateway exports.

    scripts/check-dashboard.py [DASHBOARD] [--alerts FILE]... [--metrics FILE]

Defaults: deploy/grafana/mtls-gateway.json, deploy/prometheus/alerts.yaml and alerts.test.yaml,
src/metrics.rs. The metric names and label lists come from the `register_*!("gateway_...", "help",
&["label", ...])` calls in src/metrics.rs. Every `gateway_*` name in a panel target's or a template
variable's query, in an alert rule's `expr` and in a rule test's `series` must be registered there
(`_bucket`, `_sum` and `_count` of a histogram count as the histogram). Label names are checked
where the query says which metric they belong to: matchers in `gateway_x{label="..."}`, the labels of
`by (...)` / `without (...)` against the metrics inside that aggregation, `{{label}}` in a panel's
legend and `$labels.label` in an alert's annotations against the metrics of that query. `job` and
`instance` (added by the scrape) are allowed everywhere, `le` with a histogram's buckets.

Prints one line per problem and exits 1 if there is any.
"""
import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METRIC = re.compile(r"\bgateway_[a-z0-9_]+")
# A registration in src/metrics.rs: macro, name, help, and the label list when there is one.
REGISTER = re.compile(
    r"register_(?P<macro>[a-z_]+)!\(\s*\"(?P<name>gateway_[a-z0-9_]+)\"\s*,\s*\"(?:[^\"\\]|\\.)*\"\s*"
    r"(?:,\s*&\[(?P<labels>[^\]]*)\])?"
)
AGGREGATORS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
}
# Labels Prometheus adds when it scrapes, or that a selector may always name.
TARGET_LABELS = {"job", "instance", "__name__"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Functions that create labels: aggregations over them cannot be checked.
LABEL_MAKERS = re.compile(r"\blabel_(?:replace|join)\s*\(")


def load_metrics(path):
    """{name: (type, labels or None)} from src/metrics.rs."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    metrics = {}
    for m in REGISTER.finditer(text):
        macro = m.group("macro")
        kind = "histogram" if macro.startswith("histogram") else "gauge" if "gauge" in macro else "counter"
        labels = re.findall(r"\"([^\"]*)\"", m.group("labels") or "")
        metrics[m.group("name")] = (kind, set(labels))
    # Any other "gateway_..." literal is a metric name whose labels this script cannot read.
    for name in re.findall(r"\"(gateway_[a-z0-9_]+)\"", text):
        metrics.setdefault(name, ("unknown", None))
    return metrics


def blank_strings(expr):
    """The expression with the inside of every string literal replaced by spaces (same offsets)."""
    out = list(expr)
    for m in re.finditer(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`", expr):
        for i in range(m.start() + 1, m.end() - 1):
            out[i] = " "
    return "".join(out)


def resolve(name, metrics):
    """(registered name, whether it is a histogram's buckets) or (None, False)."""
    if name in metrics:
        return name, False
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and metrics.get(base, ("",))[0] == "histogram":
            return base, suffix == "_bucket"
    return None, False


def allowed_labels(names, metrics):
    """Labels the series of these metric names carry, or None when that cannot be told."""
    labels = set(TARGET_LABELS)
    for name in names:
        base, bucket = resolve(name, metrics)
        if base is None or metrics[base][1] is None:
            return None
        labels |= metrics[base][1]
        if bucket:
            labels.add("le")
    return labels


def matching(text, open_at):
    """Index of the parenthesis closing the one at open_at, or -1."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def matching_back(text, close_at):
    depth = 0
    for i in range(close_at, -1, -1):
        if text[i] == ")":
            depth += 1
        elif text[i] == "(":
            depth -= 1
            if depth == 0:
                return i
    return -1


def check_expr(expr, where, metrics, problems, used, extra_labels=()):
    """Checks one PromQL expression; returns the labels its metrics carry (None if unknown)."""
    plain = blank_strings(expr)
    names = []
    for m in METRIC.finditer(plain):
        # A name directly followed by "(" is a function, not a metric; gateway_ has none, but be safe.
        name = m.group(0)
        base, _ = resolve(name, metrics)
        if base is None:
            problems.append(f"{where}: {name} is not a metric registered in src/metrics.rs")
            continue
        used.add(base)
        names.append(name)

        # Matchers of this selector: gateway_x{a="...", b=~"..."}.
        rest = plain[m.end():]
        sel = re.match(r"\s*\{([^}]*)\}", rest)
        if sel:
            own = allowed_labels([name], metrics)
            for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", sel.group(1)):
                if own is not None and label not in own:
                    problems.append(f"{where}: {name} has no label {label!r} (it has: {', '.join(sorted(own))})")

    # Grouping clauses: "agg by (...) (arg)" and "agg (arg) by (...)".
    for m in re.finditer(r"\b(by|without)\s*\(([^()]*)\)", plain):
        labels = [x.strip() for x in m.group(2).split(",") if x.strip()]
        before = plain[: m.start()].rstrip()
        arg = None
        word = re.search(r"([a-z_]+)$", before)
        if word and word.group(1) in AGGREGATORS:
            start = plain.find("(", m.end())
            if start != -1 and not plain[m.end():start].strip():
                end = matching(plain, start)
                arg = plain[start : end + 1] if end != -1 else None
        elif before.endswith(")"):
            start = matching_back(before, len(before) - 1)
            head = re.search(r"([a-z_]+)\s*$", before[:start]) if start != -1 else None
            if head and head.group(1) in AGGREGATORS:
                arg = before[start:]
        if arg is None or LABEL_MAKERS.search(arg):
            continue
        inside = METRIC.findall(arg)
        known = allowed_labels(inside, metrics) if inside else None
        if known is None:
            continue
        for label in labels:
            if label not in known:
                problems.append(
                    f"{where}: {m.group(1)} ({label}): none of {', '.join(sorted(set(inside)))} has a label {label!r}"
                )

    if LABEL_MAKERS.search(plain) or not names:
        return None
    labels = allowed_labels(names, metrics)
    return None if labels is None else labels | set(extra_labels)


def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # the panels of a collapsed row


def check_dashboard(path, metrics, problems, used):
    name = os.path.relpath(path, HERE) if path.startswith(HERE) else path
    try:
        with open(path, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{name}: cannot read: {e}")
        return
    if dashboard.get("schemaVersion") != 39:
        problems.append(f"{name}: schemaVersion is {dashboard.get('schemaVersion')!r}, not 39")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
        problems.append(f"{name}: no template variable 'datasource' of type datasource (prometheus)")
    for var in variables.values():
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or var.get("definition", "")
        check_expr(query, f"{name}: variable {var.get('name')}", metrics, problems, used)
    ids = set()
    for panel in panels_of(dashboard):
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            problems.append(f"{name}: panel {title!r}: id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            problems.append(f"{name}: panel {title!r} has no target")
        for target in panel.get("targets", []):
            where = f"{name}: panel {title!r} target {target.get('refId', '?')}"
            expr = target.get("expr")
            if not expr:
                problems.append(f"{where}: no expr")
                continue
            labels = check_expr(expr, where, metrics, problems, used)
            if labels is not None:
                for label in re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", target.get("legendFormat", "")):
                    if label not in labels:
                        problems.append(f"{where}: legend uses {{{{{label}}}}}, which the query's metrics do not have")


def yaml_values(text, key):
    """(line number, value) of every `key:` in a YAML file, with folded or literal block values joined."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = re.match(rf"^(\s*)(?:-\s+)?{key}:\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        start, indent, value = i + 1, len(m.group(1)), m.group(2).strip()
        i += 1
        if value in ("", "|", ">", "|-", ">-", "|+", ">+"):
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            value = " ".join(block)
        elif value[:1] in "'\"" and value[-1:] == value[:1]:
            value = value[1:-1]
        out.append((start, value))
    return out


def check_alerts(path, metrics, problems, used):
    name = os.path.relpath(path, HERE) if path.startswith(HERE) else path
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        problems.append(f"{name}: cannot read: {e}")
        return
    # Rules: each `- alert:` block, its expr, and the $labels its annotations use.
    blocks = re.split(r"(?m)^(?=\s*-\s+(?:alert|record):)", text)
    line = 1
    for block in blocks:
        alert = re.match(r"\s*-\s+(?:alert|record):\s*(\S+)", block)
        for offset, expr in yaml_values(block, "expr"):
            where = f"{name}:{line + offset - 1}" + (f" ({alert.group(1)})" if alert else "")
            labels = check_expr(expr, where, metrics, problems, used)
            if labels is None or not alert:
                continue
            by = set()
            for g in re.findall(r"\bby\s*\(([^()]*)\)", blank_strings(expr)):
                by |= {x.strip() for x in g.split(",") if x.strip()}
            for label in sorted(set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", block))):
                if label not in labels and label not in by:
                    problems.append(f"{where}: annotations use $labels.{label}, which the expr's metrics do not have")
        line += block.count("\n")
    # Rule tests: input series.
    for offset, series in yaml_values(text, "series"):
        check_expr(series, f"{name}:{offset}", metrics, problems, used)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dashboard", nargs="?", default=os.path.join(HERE, "deploy/grafana/mtls-gateway.json"))
    parser.add_argument("--alerts", action="append", help="alert rules or rule tests (repeatable)")
    parser.add_argument("--metrics", default=os.path.join(HERE, "src/metrics.rs"))
    args = parser.parse_args()
    alerts = args.alerts or [
        os.path.join(HERE, "deploy/prometheus/alerts.yaml"),
        os.path.join(HERE, "deploy/prometheus/alerts.test.yaml"),
    ]

    metrics = load_metrics(args.metrics)
    problems = []
    if not metrics:
        problems.append(f"{args.metrics}: no metric registration found")
    used = set()
    check_dashboard(os.path.abspath(args.dashboard), metrics, problems, used)
    for path in alerts:
        check_alerts(os.path.abspath(path), metrics, problems, used)

    for p in problems:
        print(p)
    unused = sorted(set(metrics) - used)
    if unused:
        print(f"check-dashboard: note: not used by the dashboard or the alerts: {', '.join(unused)}", file=sys.stderr)
    if problems:
        print(f"check-dashboard: {len(used)} metrics checked, {len(problems)} problems")
        return 1
    print(f"check-dashboard: {len(used)} metrics checked, 0 problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
