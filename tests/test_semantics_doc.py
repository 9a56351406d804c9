"""docs/semantics.md, executed: every worked example must bill what the doc says.

An example is a section whose heading starts with "Example". Its steps run in
document order on a fresh database:

- a fenced ```jsonl block is loaded with `metering ingest` (every line must be stored);
- a fenced ```console block is a shell transcript: each `$ metering ...` line is run
  through the CLI (it must exit 0 unless the next command is `$ echo $?`, whose
  output line is the expected exit status); the other lines are the expected stdout;
- a Markdown table is checked against the database at that point. Its header says
  what it shows:
  * `quantity` with some of account, entity, resource_id, offering, unit, hour: the
    SUM of usage_lines.quantity grouped by the columns shown, zero sums left out
    (what the contract calls the billed amount);
  * `run_id` and `quantity`: the individual usage_lines;
  * `run_id` and `kind`: the runs table;
  * `reason`: the rejected_events table.
  Rows compare as multisets. An empty cell or "" is the empty string.
"""

from __future__ import annotations

import io
import re
import shlex
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select
from support import migrated

from metering.cli import main
from metering.ingest import ingest
from metering.store.schema import rejected_events, runs, usage_lines
from metering.store.types import to_decimal
from metering.timeutil import iso, parse_time

DOC = Path(__file__).resolve().parents[1] / "docs" / "semantics.md"

KEY_COLUMNS = ("account", "entity", "resource_id", "offering", "unit", "hour")
LINE_COLUMNS = ("run_id", *KEY_COLUMNS, "quantity", "source")
RUN_COLUMNS = (
    "run_id",
    "kind",
    "hours_from",
    "hours_to",
    "events_read",
    "lines_written",
    "corrections",
    "rejected",
    "anomalies",
)
FINDING_COLUMNS = ("run_id", "event_id", "category", "reason")
TIME_COLUMNS = {"hour", "hours_from", "hours_to"}
INT_COLUMNS = {"events_read", "lines_written", "corrections", "rejected", "anomalies"}


@dataclass
class Step:
    kind: str  # "events", "console" or "table"
    line: int  # 1-based line in the doc, for messages
    lines: list[str]


@dataclass
class Example:
    title: str
    line: int
    steps: list[Step] = field(default_factory=list)


def parse_examples(text: str) -> list[Example]:
    examples: list[Example] = []
    current: Example | None = None
    fence: Step | None = None
    fence_lang = ""
    table: Step | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is not None or fence_lang:
            if line.strip().startswith("```"):
                if fence is not None and current is not None:
                    current.steps.append(fence)
                fence, fence_lang = None, ""
            elif fence is not None:
                fence.lines.append(line)
            continue
        if table is not None and not line.lstrip().startswith("|"):
            if current is not None:
                current.steps.append(table)
            table = None
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            title = heading.group(1).strip()
            current = Example(title, number) if title.startswith("Example") else None
            if current is not None:
                examples.append(current)
            continue
        opening = re.match(r"\s*```(\S*)", line)
        if opening:
            fence_lang = opening.group(1) or "plain"
            if current is not None and fence_lang in ("jsonl", "console"):
                fence = Step("events" if fence_lang == "jsonl" else "console", number, [])
            continue
        if line.lstrip().startswith("|"):
            if table is None:
                table = Step("table", number, [])
            table.lines.append(line)
    if table is not None and current is not None:
        current.steps.append(table)
    return examples


def cells(row: str) -> list[str]:
    values = [c.strip() for c in row.strip().strip("|").split("|")]
    return ["" if v == '""' else v.strip("`") for v in values]


def parse_table(step: Step) -> tuple[list[str], list[list[str]]]:
    header = cells(step.lines[0])
    if len(step.lines) < 2 or not re.fullmatch(r"[\s|:-]+", step.lines[1]):
        raise AssertionError(f"line {step.line}: a table needs a |---| separator line")
    rows = [cells(r) for r in step.lines[2:]]
    for row in rows:
        assert len(row) == len(header), f"line {step.line}: row {row} does not fit {header}"
    return header, rows


def normalize(column: str, value: Any) -> Any:
    if value is None or value == "":
        return ""
    if column in TIME_COLUMNS:
        return iso(parse_time(value) if isinstance(value, str) else value)
    if column == "quantity":
        return to_decimal(value) if not isinstance(value, str) else Decimal(value)
    if column in INT_COLUMNS:
        return int(value)
    return str(value)


def show(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table in the doc's own format, to paste or compare by eye."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        out.append("| " + " | ".join(str(v) if v != "" else '""' for v in row) + " |")
    return "\n".join(out)


def billed_sums(engine: Engine, header: Sequence[str]) -> list[tuple[Any, ...]]:
    keys = [c for c in header if c != "quantity"]
    columns = [usage_lines.c.period_start if c == "hour" else usage_lines.c[c] for c in keys]
    query = select(*columns, func.sum(usage_lines.c.quantity)).group_by(*columns)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    found = []
    for row in rows:
        values = dict(zip(keys, row[:-1], strict=True))
        total = to_decimal(row[-1])
        if total != 0:
            values["quantity"] = total
            found.append(tuple(normalize(c, values[c]) for c in header))
    return found


def table_rows(engine: Engine, header: Sequence[str]) -> list[tuple[Any, ...]]:
    allowed: Sequence[str]
    if "kind" in header:
        table, allowed = runs, RUN_COLUMNS
    elif "reason" in header:
        table, allowed = rejected_events, FINDING_COLUMNS
    elif "run_id" in header:
        table, allowed = usage_lines, LINE_COLUMNS
    else:
        if not set(header) <= {*KEY_COLUMNS, "quantity"} or "quantity" not in header:
            raise AssertionError(f"unknown table header {list(header)}")
        return billed_sums(engine, header)
    unknown = set(header) - set(allowed)
    assert not unknown, f"columns {sorted(unknown)} are not among {allowed}"
    columns = [table.c["period_start" if c == "hour" else c] for c in header]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns)).all()
    return [tuple(normalize(c, v) for c, v in zip(header, row, strict=True)) for row in rows]


def check_table(engine: Engine, example: Example, step: Step) -> None:
    header, rows = parse_table(step)
    expected = [tuple(normalize(c, v) for c, v in zip(header, row, strict=True)) for row in rows]
    actual = table_rows(engine, header)
    if Counter(expected) != Counter(actual):
        raise AssertionError(
            f"{example.title!r}, table at docs/semantics.md line {step.line}: the database "
            f"holds\n{show(header, sorted(actual, key=str))}\nthe doc says\n"
            f"{show(header, sorted(expected, key=str))}"
        )


def load_events(engine: Engine, step: Step) -> None:
    data = [(line + "\n").encode() for line in step.lines]
    problems: list[str] = []
    summary = ingest(engine, io.BytesIO(b"".join(data)), on_error=lambda n, r: problems.append(r))
    assert not problems, f"jsonl block at line {step.line}: {problems}"
    assert summary.malformed == 0


def commands(step: Step) -> Iterator[tuple[list[str], list[str]]]:
    """(argv, expected output lines) for each `$ ...` of a console block."""
    argv: list[str] | None = None
    output: list[str] = []
    for line in step.lines:
        if line.startswith("$ "):
            if argv is not None:
                yield argv, output
            argv, output = shlex.split(line[2:], comments=True), []
        elif argv is not None:
            output.append(line.rstrip())
        elif line.strip():
            raise AssertionError(f"console block at line {step.line}: output before a command")
    if argv is not None:
        yield argv, output


def run_console(url: str, tmp_path: Path, example: Example, step: Step) -> None:
    env = {
        "METERING_DATABASE_URL": url,
        "METERING_LOCK_FILE": str(tmp_path / "metering.lock"),
        "METERING_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    status: int | None = None
    unchecked: str | None = None
    for argv, output in commands(step):
        where = f"{example.title!r}, console block at line {step.line}: {shlex.join(argv)}"
        if argv == ["echo", "$?"]:
            assert status is not None, f"{where}: no command before it"
            assert output == [str(status)], f"{where}: the exit status was {status}"
            unchecked = None
            continue
        assert unchecked is None, unchecked
        assert argv[0] == "metering", f"{where}: only metering commands are run"
        result = CliRunner().invoke(
            main, ["--log-format", "json", *argv[1:]], env=env, catch_exceptions=False
        )
        status = result.exit_code
        if status != 0:
            unchecked = f"{where}: exited {status} (stderr: {result.stderr[-2000:]})"
        got = [line.rstrip() for line in result.stdout.rstrip("\n").splitlines()]
        want = list(output)
        while want and not want[-1]:
            want.pop()
        assert got == want, f"{where}: printed\n" + "\n".join(got)
    assert unchecked is None, unchecked


EXAMPLES = parse_examples(DOC.read_text(encoding="utf-8")) if DOC.exists() else []


def test_the_doc_has_a_section_and_examples_for_every_rule() -> None:
    text = DOC.read_text(encoding="utf-8")
    for rule in range(1, 15):
        assert re.search(rf"^## Rule {rule}\b", text, re.MULTILINE), f"no section for rule {rule}"
    assert len(EXAMPLES) >= 14
    titles = [e.title for e in EXAMPLES]
    assert len(titles) == len(set(titles)), "example titles must be unique (they name the tests)"
    for example in EXAMPLES:
        kinds = {s.kind for s in example.steps}
        assert {"console", "table"} <= kinds, f"{example.title!r} runs or checks nothing"


def test_the_parser_sees_each_kind_of_step() -> None:
    text = "\n".join(
        [
            "## Example: x",
            "```jsonl",
            '{"event_id": "a"}',
            "```",
            "```console",
            "$ metering run --now 2016-12-12T16:31Z  # a comment",
            "$ echo $?",
            "0",
            "```",
            "| hour | quantity |",
            "|---|---:|",
            "| 2016-12-12T15:00Z | 1 |",
            "",
            "```text",
            "| not a table |",
            "```",
            "## Not an example",
            "| hour | quantity |",
        ]
    )
    (example,) = parse_examples(text)
    assert [s.kind for s in example.steps] == ["events", "console", "table"]
    assert list(commands(example.steps[1])) == [
        (["metering", "run", "--now", "2016-12-12T16:31Z"], []),
        (["echo", "$?"], ["0"]),
    ]
    assert parse_table(example.steps[2]) == (["hour", "quantity"], [["2016-12-12T15:00Z", "1"]])


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.title for e in EXAMPLES])
def test_example(example: Example, database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    try:
        for step in example.steps:
            if step.kind == "events":
                load_events(engine, step)
            elif step.kind == "console":
                run_console(database_url, tmp_path, example, step)
            else:
                check_table(engine, example, step)
    finally:
        engine.dispose()
