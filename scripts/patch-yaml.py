#!/usr/bin/python3
"""Writes a shipped YAML file with some keys changed, so that scripts derive their configurations
from conf/ instead of keeping templates of their own.

    patch-yaml.py IN OUT 'path=value' 'path+=value' '-path' ...

A path is dotted keys with list indexes, e.g. `routes[0].filters`; a value is YAML (`[a, b]`,
`{x: 1}`, `2s`). `=` sets (creating mappings on the way), `+=` appends to a list, `-path` removes.
"""
import re
import sys

import yaml


def steps(path):
    for part in path.split("."):
        m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", part)
        if not m:
            sys.exit(f"patch-yaml: bad path {path!r}")
        yield m.group(1)
        for idx in re.findall(r"\[(\d+)\]", m.group(2)):
            yield int(idx)


def parent(doc, path):
    keys = list(steps(path))
    cur = doc
    for k in keys[:-1]:
        if isinstance(k, str) and cur.get(k) is None:
            cur[k] = {}
        cur = cur[k]
    return cur, keys[-1]


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    with open(argv[1]) as f:
        doc = yaml.safe_load(f)
    for change in argv[3:]:
        if change.startswith("-"):
            holder, key = parent(doc, change[1:])
            del holder[key]
        elif "+=" in change:
            path, value = change.split("+=", 1)
            holder, key = parent(doc, path)
            holder.setdefault(key, []).append(yaml.safe_load(value))
        elif "=" in change:
            path, value = change.split("=", 1)
            holder, key = parent(doc, path)
            holder[key] = yaml.safe_load(value)
        else:
            sys.exit(f"patch-yaml: cannot read {change!r}")
    with open(argv[2], "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)


if __name__ == "__main__":
    main(sys.argv)
