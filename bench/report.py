"""Plain-text tables of the benchmark results (the same rows go to bench/README.md)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def rows_table(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{title}: no rows"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(vals: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"

    out = [f"\n## {title}", line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells]
    return "\n".join(out)


def table(name: str, result: dict[str, Any]) -> str:
    if name == "ann":
        rows = [{"kind": k, **v} for k, v in result["kinds"].items()]
        return rows_table(
            f"ANN at {result['vectors']:,} × {result['dim']}-d (selector picks {result['selector_picks']})",
            rows,
        )
    rows = result.get("rows")
    if isinstance(rows, list):
        out = rows_table(name, rows)
        for extra in ("decode_paths",):
            if isinstance(result.get(extra), list):
                out += "\n" + rows_table(f"{name}: {extra}", result[extra])
        for extra in ("reindex", "peers", "multilingual", "trained"):
            if extra in result:
                out += f"\n{extra}: {result[extra]}"
        return out
    return f"\n## {name}\n{result}"
