"""Derives Python dataclasses from the Avro contracts: `python -m keel_ops.codegen` writes keel/contracts.py.

The .avsc files are the source of truth; the generated module is never edited by hand, and a unit
test fails when it is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import keel
from keel.schemas import schema_json, schema_names

# The generated module belongs to the runtime library (keel), not to this tooling package.
OUT = Path(keel.__file__).with_name("contracts.py")

_PRIMITIVES = {
    "string": "str",
    "long": "int",
    "int": "int",
    "double": "float",
    "float": "float",
    "boolean": "bool",
    "bytes": "bytes",
}


class _Gen:
    def __init__(self) -> None:
        self.classes: list[str] = []
        self.seen: set[str] = set()

    # -- types -----------------------------------------------------------------------------------
    def py_type(self, t: Any) -> str:
        if isinstance(t, list):
            rest = [x for x in t if x != "null"]
            if len(rest) != 1:
                raise ValueError(f"only [null, T] unions are supported, got {t}")
            inner = self.py_type(rest[0])
            return f"{inner} | None" if "null" in t else inner
        if isinstance(t, str):
            if t in _PRIMITIVES:
                return _PRIMITIVES[t]
            return t.split(".")[-1]  # a named record defined earlier
        if t.get("logicalType") == "timestamp-millis":
            return "datetime"
        kind = t["type"]
        if kind == "record":
            self.record(t)
            return str(t["name"])
        if kind == "array":
            return f"list[{self.py_type(t['items'])}]"
        if kind == "map":
            return f"dict[str, {self.py_type(t['values'])}]"
        if kind == "enum":
            return "str"
        if kind in _PRIMITIVES:
            return _PRIMITIVES[kind]
        raise ValueError(f"unsupported Avro type {t}")

    def _is_record(self, t: Any) -> bool:
        if isinstance(t, list):
            return any(self._is_record(x) for x in t if x != "null")
        if isinstance(t, dict):
            return bool(t.get("type") == "record")
        return t not in _PRIMITIVES and t != "null"

    def _record_name(self, t: Any) -> str:
        if isinstance(t, list):
            return self._record_name(next(x for x in t if x != "null"))
        return str(t["name"] if isinstance(t, dict) else t.split(".")[-1])

    def _array_of_records(self, t: Any) -> str | None:
        if isinstance(t, dict) and t.get("type") == "array" and self._is_record(t["items"]):
            return self._record_name(t["items"])
        return None

    # -- conversions -----------------------------------------------------------------------------
    def to_expr(self, name: str, t: Any) -> str:
        v = f"self.{name}"
        nullable = isinstance(t, list) and "null" in t
        if self._is_record(t):
            return f"{v}.to_dict() if {v} is not None else None" if nullable else f"{v}.to_dict()"
        if self._array_of_records(t):
            return f"[x.to_dict() for x in {v}]"
        return v

    def from_expr(self, name: str, t: Any, has_default: bool) -> str:
        raw = f"d.get({name!r})" if has_default else f"d[{name!r}]"
        if self._is_record(t):
            rec = self._record_name(t)
            nullable = isinstance(t, list) and "null" in t
            if nullable:
                return f"{rec}.from_dict(d[{name!r}]) if d.get({name!r}) is not None else None"
            return f"{rec}.from_dict({raw})"
        items = self._array_of_records(t)
        if items:
            return f"[{items}.from_dict(x) for x in d.get({name!r}) or []]"
        return raw

    # -- records ---------------------------------------------------------------------------------
    def record(self, schema: dict[str, Any]) -> None:
        name = schema["name"]
        if name in self.seen:
            return
        self.seen.add(name)
        fields = schema["fields"]
        typed = [(f, self.py_type(f["type"])) for f in fields]  # nested records first
        full = f"{schema.get('namespace', 'keel')}.{name}"
        lines = ["", "", "@dataclass(frozen=True, slots=True, kw_only=True)", f"class {name}:"]
        lines.append(f'    """{schema.get("doc", name)}"""')
        lines.append("")
        lines.append(f"    AVRO_NAME: ClassVar[str] = {full!r}")
        for f, py in typed:
            if "default" in f:
                dv = f["default"]
                default = "field(default_factory=list)" if dv == [] else repr(dv)
                lines.append(f"    {f['name']}: {py} = {default}")
            else:
                lines.append(f"    {f['name']}: {py}")
        lines.append("")
        lines.append("    def to_dict(self) -> dict[str, Any]:")
        lines.append("        return {")
        for f, _ in typed:
            lines.append(f"            {f['name']!r}: {self.to_expr(f['name'], f['type'])},")
        lines.append("        }")
        lines.append("")
        lines.append("    @classmethod")
        lines.append(f"    def from_dict(cls, d: Mapping[str, Any]) -> {name}:")
        lines.append("        return cls(")
        for f, _ in typed:
            expr = self.from_expr(f["name"], f["type"], "default" in f)
            if "default" in f and not self._is_record(f["type"]) and not self._array_of_records(f["type"]):
                expr = f"d.get({f['name']!r}, {f['default']!r})"
            lines.append(f"            {f['name']}={expr},")
        lines.append("        )")
        self.classes.append("\n".join(lines))


def render() -> str:
    gen = _Gen()
    tops = []
    for stem in schema_names():
        sch = schema_json(stem)
        gen.record(sch)
        tops.append((stem, sch["name"]))
    head = [
        '"""Python types of the Avro contracts. GENERATED by `python -m keel_ops.codegen` '
        "from schemas/*.avsc:",
        'do not edit by hand."""',
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import Mapping",
        "from dataclasses import dataclass, field",
        "from datetime import datetime",
        "from typing import Any, ClassVar",
    ]
    by_schema = [
        "",
        "",
        "# Top-level record type of each contract file (by stem).",
        "RECORD_TYPES: dict[str, type] = {",
    ]
    by_schema += [f"    {stem!r}: {cls}," for stem, cls in tops]
    by_schema.append("}")
    return "\n".join(head + gen.classes + by_schema) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            print("keel/contracts.py is out of date: run `python -m keel_ops.codegen`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
