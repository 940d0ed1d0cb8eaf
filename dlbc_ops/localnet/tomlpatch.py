"""Line-level edits of known keys in a TOML file, keeping everything else byte for byte.

Why not a TOML writer: CometBFT's config.toml is mostly comments an operator reads, and the
project takes no new dependency for writing TOML (stdlib `tomllib` only reads). We rewrite only
`key = value` lines of the keys we own, in the section we name, and check the result with
`tomllib` so a patch can never leave an unparsable file behind.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

TomlScalar = str | int | bool

_SECTION_RE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?$")
_ARRAY_TABLE_RE = re.compile(r"^\s*\[\[")


class TomlPatchError(ValueError):
    """The file cannot be patched safely (syntax we do not rewrite, or a failed self-check)."""


def format_value(value: TomlScalar) -> str:
    """TOML text of a scalar; strings become TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(_escape(ch) for ch in value) + '"'
    raise TomlPatchError(f"unsupported TOML value type {type(value).__name__}")


def _escape(ch: str) -> str:
    """TOML basic-string escaping: quote, backslash and every control char (incl. DEL)."""
    if ch in ('"', "\\"):
        return "\\" + ch
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"\\u{ord(ch):04x}"
    return ch


def _key_re(key: str) -> re.Pattern[str]:
    return re.compile(r"^(\s*)" + re.escape(key) + r"(\s*)=(\s*)(.*)$")


def patch_toml(text: str, edits: Mapping[str, Mapping[str, TomlScalar]]) -> str:
    """Return `text` with `edits[section][key] = value` applied.

    `section` "" is the top level (before the first table header). An existing key line is
    rewritten in place (indentation kept); a missing key is added after the section's last
    key line; a missing section is appended. Only single-line values are rewritten: a key we
    own whose value spans lines (a multi-line array or string) is refused, not mangled.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    # Index every line by its section.
    section_of: list[str] = []
    current = ""
    for line in lines:
        if _ARRAY_TABLE_RE.match(line):
            current = "\x00array-table"  # never a target; we do not edit arrays of tables
        else:
            m = _SECTION_RE.match(line)
            if m:
                current = m.group(1)
        section_of.append(current)

    inserts: dict[int, list[str]] = {}
    new_sections: list[str] = []
    for section, keys in edits.items():
        header_idx = _header_index(lines, section, section_of)
        missing: list[str] = []
        for key, value in keys.items():
            rendered = f"{key} = {format_value(value)}\n"
            i = _find_key(lines, section_of, section, header_idx, key)
            if i is None:
                missing.append(rendered)
                continue
            m = _key_re(key).match(lines[i])
            if m is None:  # cannot happen: _find_key matched this line with the same pattern
                raise TomlPatchError(f"internal: lost the line of {key}")
            old = m.group(4).strip()
            if old.startswith(("[", '"""', "'''")) and not _single_line_value(old):
                raise TomlPatchError(
                    f"[{section or 'top level'}] {key} spans several lines; edit it by hand"
                )
            lines[i] = m.group(1) + rendered
        if not missing:
            continue
        if section and header_idx is None:
            new_sections.append(f"\n[{section}]\n" + "".join(missing))
        else:
            at = _insertion_index(lines, section_of, header_idx)
            inserts.setdefault(at, []).extend(missing)

    out: list[str] = list(inserts.get(-1, []))
    for i, line in enumerate(lines):
        out.append(line)
        out.extend(inserts.get(i, []))
    out.extend(new_sections)
    result = "".join(out)
    _self_check(result, edits)
    return result


def _single_line_value(old: str) -> bool:
    try:
        tomllib.loads(f"x = {old}\n")
    except tomllib.TOMLDecodeError:
        return False
    return True


def _find_key(
    lines: list[str], section_of: list[str], section: str, header_idx: int | None, key: str
) -> int | None:
    pattern = _key_re(key)
    for i, line in enumerate(lines):
        if section_of[i] == section and i != header_idx and pattern.match(line):
            return i
    return None


def _header_index(lines: list[str], section: str, section_of: list[str]) -> int | None:
    if not section:
        return None
    for i, line in enumerate(lines):
        m = _SECTION_RE.match(line)
        if m and m.group(1) == section:
            return i
    return None


def _insertion_index(lines: list[str], section_of: list[str], header_idx: int | None) -> int:
    """Index after which a missing key goes: right after its section header, or for the top
    level just before the first header. Neither position can fall inside a multi-line value."""
    if header_idx is not None:
        return header_idx
    for i, sec in enumerate(section_of):
        if sec:
            return i - 1
    return len(lines) - 1


def get_path(doc: Mapping[str, Any], section: str, key: str) -> Any:
    node: Any = doc
    for part in [p for p in section.split(".") if p]:
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node.get(key) if isinstance(node, Mapping) else None


def _self_check(text: str, edits: Mapping[str, Mapping[str, TomlScalar]]) -> None:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlPatchError(f"patched config is not valid TOML ({exc})") from None
    for section, keys in edits.items():
        for key, value in keys.items():
            got = get_path(doc, section, key)
            if got != value or type(got) is not type(value):
                raise TomlPatchError(
                    f"patch of [{section or 'top level'}] {key} did not take (read back {got!r})"
                )
