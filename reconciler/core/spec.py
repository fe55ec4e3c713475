"""Trigger specs: YAML text in, a frozen `Spec` or a `SpecError` with positions out. No I/O."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from ruamel.yaml.constructor import ConstructorError, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
)
from ruamel.yaml.main import CParser
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.resolver import VersionedResolver, implicit_resolvers
from ruamel.yaml.tag import Tag

from reconciler.core import schedule as cron
from reconciler.core.errors import Problem, SpecError
from reconciler.core.yamlpos import yaml_type

SPEC_SUFFIXES = (".yaml", ".yml")
CONFIG_FILES = ("reconciler.yaml", "reconciler.yml")
"""A config file at the root of the triggers directory is not a trigger."""

ParamValue = str | int | float | bool
MAX_DEPTH = 32
"""How deep a spec (or the server config) may nest collections. A spec needs two (the spec, its
parameters); the YAML composer recurses once per level, in C, and tens of thousands crash the process."""
_NESTING = ("[", "{", "-", ":", "?")
"""Every level of nesting opens with one of these: a text with fewer of them cannot be too deep."""
MAX_NODES = 5000
"""The most YAML nodes (scalars and collections) a trigger spec may hold. A spec is a dozen keys and
its parameters (two nodes each): a job with a thousand parameters fits twice over. Counted while the
C parser streams the text, before anything is built from it, so a file's cost follows this, not its
shape: a 256 KiB flow list of 131,000 numbers is refused after its first 5,000."""
_NODE_MARKS = (*_NESTING, ",")
"""Every node but the first comes after one of these (a key after `?`, `,`, a newline's value after `:`
or `-`): a text with fewer than MAX_NODES / 2 of them is within the budget without being parsed."""
MAX_PROBLEMS = 20
"""The most problems kept for one file: a file of thousands of unknown keys is reported by its first
ones (and their count), not by a report as large as the file, kept for as long as the file exists."""
_STRUCTURE = re.compile(r"(?:^|[\s,\[{:])(?:[&*][\w-]|!\S)|<<", re.MULTILINE)
"""Anchors and aliases start a node with `&` or `*` right before their name (letters, digits, `_`, `-`
in libyaml, which the C parser is), tags with `!`, each after a space, a line's start, `,`, `[`, `{`
or a flow mapping's `:`;
merge keys are `<<`: a text without these has none. A cron expression's `'* * * * *'` is not one of
them, and costs no parse of its own."""
MAX_NUMBER_DIGITS = 64
"""A longer number is refused rather than converted: Python's int() of thousands of digits is slow
or refused, and no parameter needs it as a number (quoted, it is a string of any length)."""
PROVENANCE_FIELDS = ("sha", "author", "email", "date", "subject")
"""What `provenance_parameters` may pass on of the commit behind a spec."""
RESERVED_PARAMETERS = ("token", "cause", "delay", "json")
"""Jenkins reads these form fields itself: a parameter of that name would replace the job token,
spoof the cause (and drop the run id from it), move the quiet period or change how /build is read."""


def _schedule_keys_problem(schedule: Any, keys: Any) -> str | None:
    """Keys that mean something only beside `schedule:`. Checked again when other keys are wrong too
    (pydantic runs a model's own checks only once its fields are valid): every problem at once."""
    if schedule is not None:
        return None
    used = [k for k in ("timezone", "starting_deadline", "concurrency", "scheduled_time_parameter") if k in keys]
    if not used:
        return None
    verb = "applies" if len(used) == 1 else "apply"
    return f"{', '.join(used)} {verb} only to scheduled triggers: add `schedule:`"


class SpecModel(BaseModel):
    """The shape of a trigger file, as users write it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True,
                              title="Trigger spec", json_schema_extra={"additionalProperties": False})

    job: Annotated[str, Field(
        min_length=1, description="Jenkins job; `a/b/c` is job c in folders a/b. Written as in a job's URL, "
                                  "`job/a/job/b/job/c` means the same; `view/NAME/` prefixes are dropped (Jenkins "
                                  "finds a job by its folders, not its views). Never a URL: a spec names no host, "
                                  "the server comes from the operator's config.",
        json_schema_extra={"not": {"pattern": "^[A-Za-z][A-Za-z0-9+.-]*://"}})]
    parameters: dict[str, ParamValue] | None = Field(
        None, description="Build parameters, sent as written (`1.10` stays 1.10; booleans as true/false). "
                           "Present: buildWithParameters; absent: build.")
    server: str = Field("default", description="Server name from the config; `default` comes from JENKINS_URL.")
    cause: str | None = Field(None, description="Text passed as Jenkins' `cause` (shown when a job token is used).")
    run: Annotated[int, Field(ge=1, description="Bump to fire an unchanged one-shot again.")] = 1
    suspend: bool = Field(False, description="Fire nothing while true.")
    run_id_parameter: str | None = Field(
        None, description="A job parameter that receives the run id, so a build can be found after a crash.")
    schedule: str | None = Field(
        None, description="Cron expression (5 fields, names, @macros, Jenkins' H): fire once per tick.")
    timezone: str = Field("UTC", description="IANA time zone the schedule is read in.")
    starting_deadline: str = Field(
        "10m", description="How late a missed tick may still fire (e.g. 30s, 10m, 1h); older ticks are missed.")
    concurrency: Literal["allow", "forbid", "replace"] = Field(
        "allow", description="A tick while the previous run is queued or building: allow, forbid (skip), "
                             "replace (cancel or stop it).")
    scheduled_time_parameter: str | None = Field(
        None, description="A job parameter that receives the tick's time (ISO 8601, in `timezone`).")
    pause_after_failures: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None, description="Pause the trigger itself after this many runs in a row ended other than SUCCESS "
                          "(`reconciler resume NAME` lifts it).")
    provenance_parameters: dict[Literal[PROVENANCE_FIELDS], str] | None = Field(  # type: ignore[valid-type]
        None, description="Job parameters that receive the commit behind the spec, e.g. {sha: GIT_COMMIT, "
                          "author: REQUESTED_BY}; fields: sha, author, email, date, subject. Sent empty where "
                          "git knows no commit.")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is not None:
            cron.resolve(v, "")
            cron.parse(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        cron.zone(v)
        return v

    @field_validator("starting_deadline")
    @classmethod
    def _deadline(cls, v: str) -> str:
        cron.parse_duration(v)
        return v

    @model_validator(mode="after")
    def _schedule_keys_need_a_schedule(self) -> SpecModel:
        problem = _schedule_keys_problem(self.schedule, self.model_fields_set)
        if problem:
            raise ValueError(problem)
        return self


    @field_validator("job")
    @classmethod
    def _job_path(cls, v: str) -> str:
        if _URL.match(v):
            path = urlsplit(v).path
            try:
                job, _ = job_path(path)
            except ValueError:
                job = ""
            job = "" if job == path else job
            raise ValueError("a job is named by its path, never a URL (a spec names no host: the server comes "
                             "from the operator's config); write " + (f"`job: {job}`" if job else
                                                                      "the job's folders, `job: folder/sub/job`"))
        v, _ = job_path(v)
        segments = v.split("/")
        if any(not seg.strip() for seg in segments):
            raise ValueError("job path has an empty segment; write folders as `folder/sub/job`")
        if any(seg in (".", "..") for seg in segments):
            raise ValueError("job path has a `.` or `..` segment; name the job by its folders, `folder/sub/job`")
        return v

    @field_validator("parameters")
    @classmethod
    def _parameter_names(cls, v: dict[str, ParamValue] | None) -> dict[str, ParamValue] | None:
        _not_reserved(*(v or ()))
        return v

    @field_validator("run_id_parameter", "scheduled_time_parameter")
    @classmethod
    def _tag_parameter_name(cls, v: str | None) -> str | None:
        if v is not None:
            _not_reserved(v)
        return v

    @field_validator("provenance_parameters")
    @classmethod
    def _provenance_names(cls, v: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        """Declared last, so the other parameters are known here: each may be given one value only."""
        names = list((v or {}).values())
        _not_reserved(*names)
        taken = {*(info.data.get("parameters") or ()), info.data.get("run_id_parameter"),
                 info.data.get("scheduled_time_parameter")}
        twice = sorted({n for n in names if n in taken or names.count(n) > 1})
        if twice:
            raise ValueError(f"parameter {', '.join(map(repr, twice))} would be given two values: name a "
                             "parameter nothing else sets")
        return v


def _not_reserved(*names: str) -> None:
    reserved = [repr(name) for name in names if name in RESERVED_PARAMETERS]
    if reserved:
        raise ValueError(f"parameter name {' and '.join(reserved)}: Jenkins reads these fields itself "
                         f"({', '.join(RESERVED_PARAMETERS)}); the job token and cause come from the operator's "
                         "config, so rename the parameter")


KNOWN_KEYS = tuple(SpecModel.model_fields)


@dataclass(frozen=True, slots=True)
class Spec:
    """A valid trigger: what the user declared, normalized to what Jenkins will be sent."""

    name: str
    job: str
    parameters: tuple[tuple[str, str], ...] | None
    server: str = "default"
    cause: str | None = None
    run: int = 1
    suspend: bool = False
    run_id_parameter: str | None = None
    revision: str = ""
    schedule: cron.Schedule | None = None
    starting_deadline: timedelta = timedelta(minutes=10)
    concurrency: str = "allow"
    scheduled_time_parameter: str | None = None
    provenance_parameters: tuple[tuple[str, str], ...] | None = None
    """(commit field, job parameter) pairs."""
    notes: tuple[str, ...] = ()
    """How the spec was read where that may surprise its author (a job written as its URL path)."""
    pause_after_failures: int | None = None

    @property
    def endpoint(self) -> str:
        return "build" if self.parameters is None else "buildWithParameters"


def jenkins_value(value: ParamValue) -> str:
    """Jenkins receives strings: numbers as they were written (`1.10`, not `1.1`), booleans as
    Jenkins spells them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return getattr(value, "written", None) or str(value)


def revision_of(server: str, job: str, parameters: tuple[tuple[str, str], ...] | None, run: int) -> str:
    """A hash of what Jenkins would be asked to do: formatting, comments and key order never change it."""
    canonical = json.dumps({"server": server, "job": job, "run": run,
                            "parameters": None if parameters is None else sorted(parameters)},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def trigger_name(relative_path: str) -> str | None:
    """`team/deploy.yaml` → `team/deploy`; None for what is not a trigger file."""
    parts = relative_path.replace("\\", "/").split("/")
    if any(p.startswith(".") for p in parts) or not relative_path.endswith(SPEC_SUFFIXES):
        return None
    if len(parts) == 1 and parts[0] in CONFIG_FILES:
        return None
    return relative_path.rsplit(".", 1)[0].replace("\\", "/")


def _core_schema() -> dict[str, tuple[tuple[str, Any], ...]]:
    table: dict[str, list[tuple[str, Any]]] = {}
    for versions, tag, regexp, first in implicit_resolvers:
        if (1, 2) in versions:
            for char in first:
                table.setdefault(char, []).append((tag, regexp))
    return {char: tuple(rules) for char, rules in table.items()}


class _Yaml12Resolver(VersionedResolver):
    """ruamel's YAML 1.2 resolution of plain scalars, from a table built once. ruamel rebuilds its
    table on every load (and works out the YAML version on every scalar), once per spec in a pass."""

    _rules = _core_schema()

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0]:
            for tag, regexp in self._rules.get(value[:1], ()):
                if regexp.match(value):
                    return Tag(suffix=tag)
            implicit = (False, implicit[1])
        return super().resolve(kind, value, implicit)


class _WrittenInt(int):
    written: str


class _WrittenFloat(float):
    written: str


class _Constructor(SafeConstructor):
    """Numbers that remember how they were written. Jenkins parameters are strings, and a user who
    writes `VERSION: 1.10` means the characters 1.10, not the number 1.1."""

    def construct_written_int(self, node: ScalarNode) -> int:
        number = _WrittenInt(self.construct_yaml_int(_short_number(node)))
        number.written = node.value
        return number

    def construct_written_float(self, node: ScalarNode) -> float:
        number = _WrittenFloat(self.construct_yaml_float(_short_number(node)))
        number.written = node.value
        return number

    def construct_written_text(self, node: ScalarNode) -> str:
        """A date is a parameter value like any other: sent as written, `2026-12-01`."""
        return str(node.value)


def _short_number(node: ScalarNode) -> ScalarNode:
    if len(node.value) > MAX_NUMBER_DIGITS:
        raise ConstructorError(problem=f"a number of more than {MAX_NUMBER_DIGITS} digits: quote it to send it "
                                       "as text", problem_mark=node.start_mark)
    return node


_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_written_int)
_Constructor.add_constructor("tag:yaml.org,2002:float", _Constructor.construct_written_float)
_Constructor.add_constructor("tag:yaml.org,2002:timestamp", _Constructor.construct_written_text)


_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


class _Loader(CParser, _Constructor, _Yaml12Resolver):  # type: ignore[misc]
    """ruamel's C parser with our constructor and resolver, put together as `YAML(typ="safe").load`
    does, but as a class made once. `load` makes the class anew on every call and keeps a record of
    every call, forever."""

    def __init__(self, text: str):
        CParser.__init__(self, text)
        self._parser = self._composer = self
        _Constructor.__init__(self, loader=self)
        self.allow_duplicate_keys = False
        _Yaml12Resolver.__init__(self, version=(1, 2), loadumper=self)

    def document(self) -> Any:
        """The document's values, built straight from its nodes. `structure_problem` has refused anchors,
        aliases, merge keys and explicit tags, so every node is a plain mapping, sequence or implicitly
        typed scalar: SafeConstructor's machinery for the rest (recursion through aliases, merges, two-step
        construction) cost half a spec's parse. A node of another kind or tag still goes that way."""
        node = self.get_single_node()
        return None if node is None else self._value(node)

    def _value(self, node: Node) -> Any:
        if isinstance(node, ScalarNode):
            make = self.yaml_constructors.get(node.tag)
            return make(self, node) if make is not None else self.construct_object(node, deep=True)
        if isinstance(node, MappingNode) and node.tag == _MAP:
            mapping: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    raise ConstructorError("while constructing a mapping", node.start_mark,
                                           "a key must be a plain value, not a list or a mapping", key_node.start_mark)
                key = self._value(key_node)
                if key in mapping:
                    raise ConstructorError("while constructing a mapping", node.start_mark,
                                           f'found duplicate key "{key}"', key_node.start_mark)
                mapping[key] = self._value(value_node)
            return mapping
        if isinstance(node, SequenceNode) and node.tag == _SEQ:
            return [self._value(item) for item in node.value]
        return self.construct_object(node, deep=True)


def parse(text: str, *, name: str, path: str) -> Spec:
    """Parse one trigger file. `path` is only used in error messages. Whatever the text, the answer is
    a Spec or a SpecError: the text is written by anyone who can commit, and one file must never stop
    the daemon or its other triggers."""
    try:
        return _parse(text, name, path)
    except SpecError:
        raise
    except Exception as e:  # a parser or validator bug on input nobody foresaw: still that file's error
        kind = type(e).__name__
    # Raised out here, not in the handler: an exception raised there keeps the one it handles (and, through
    # its traceback, the text and whatever was built of it) as its __context__, `from None` or not.
    raise SpecError(path, [Problem(1, 1, f"cannot read this file as a trigger spec ({kind})")])


def _parse(text: str, name: str, path: str) -> Spec:
    refused = structure_problem(text)
    if refused is not None:
        raise SpecError(path, [refused])
    loader = _Loader(text)
    problem = None
    try:
        data = loader.document()
    except MarkedYAMLError as e:
        problem = yaml_problem(e)
    except ReaderError as e:
        problem = reader_problem(text, e)
    except YAMLError as e:
        problem = Problem(1, 1, f"invalid YAML: {_one_line(str(e))}")
    finally:
        loader.dispose()
    if problem is not None:  # raised outside the handler: a SpecError holds positions and text, nothing else
        raise SpecError(path, [problem])
    if data is None:
        raise SpecError(path, [Problem(1, 1, "empty file: a trigger spec needs at least `job: NAME`")])
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SpecError(path, [Problem(1, 1, f"a trigger spec is a mapping of keys to values, not a {kind}")])
    try:
        model = SpecModel.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_context=False)
    else:
        errors = None
    if errors is not None:  # raised outside the handler, so no pydantic error (nor its document) is kept
        problems = _locate(text, errors)
        also = _schedule_keys_problem(data.get("schedule"), data)
        if also and all(p.message != also for p in problems):
            problems.append(Problem(1, 1, also))
        raise SpecError(path, problems)
    params = None if model.parameters is None else tuple(  # the values as loaded: validation drops `written`
        (str(k), jenkins_value(data["parameters"][k])) for k in model.parameters)
    # Interned: ten thousand triggers usually name a few hundred jobs and a server or two.
    return Spec(name=name, job=sys.intern(model.job), parameters=params, server=sys.intern(model.server),
                cause=model.cause, run=model.run, suspend=model.suspend, run_id_parameter=model.run_id_parameter,
                revision=revision_of(model.server, model.job, params, model.run),
                schedule=None if model.schedule is None else cron.parse(model.schedule, model.timezone, name),
                starting_deadline=cron.parse_duration(model.starting_deadline), concurrency=model.concurrency,
                scheduled_time_parameter=model.scheduled_time_parameter,
                provenance_parameters=None if model.provenance_parameters is None else
                tuple(model.provenance_parameters.items()), notes=job_notes(data.get("job")),
                pause_after_failures=model.pause_after_failures)


def structure_problem(text: str, *, refuse: bool = True) -> Problem | None:
    """What makes a YAML text cost more than its size, found before anything is built from it: nesting
    deeper than MAX_DEPTH (the composer recurses once per level, in C) and, with `refuse`, more than
    MAX_NODES nodes, anchors, aliases and merge keys (a 1 KB "billion laughs" expands to gigabytes) and
    explicit tags (`!!int 0xZZ`, `!!timestamp 2001-13-45`: converters that fail in ways the schema never
    sees). Trigger specs need none of them. Only the parser runs, which keeps its own stack, it stops at
    the first of these, and it runs only when the text holds enough characters that could start one; a
    text it cannot parse is left to the parse proper to report."""
    deep = sum(map(text.count, _NESTING)) > MAX_DEPTH
    many = refuse and 2 * sum(map(text.count, _NODE_MARKS)) + 1 > MAX_NODES
    if not deep and not many and not (refuse and _STRUCTURE.search(text)):
        return None
    depth = nodes = 0
    try:
        for event in _events(text):
            mark = event.start_mark
            where = (mark.line + 1, mark.column + 1)
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return Problem(*where, f"nested more than {MAX_DEPTH} levels deep" +
                                   ("; a trigger spec needs two" if refuse else ""))
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
            if not refuse:
                continue
            if isinstance(event, NodeEvent):
                nodes += 1
                if nodes > MAX_NODES:
                    return Problem(*where, f"more than {MAX_NODES} YAML values: a trigger spec takes a few "
                                           "dozen (a job, its parameters); the file is not read further")
            if isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor):
                return Problem(*where, "YAML anchors and aliases (&name, *name) are not accepted in trigger "
                                       "specs: write each value out")
            if isinstance(event, ScalarEvent) and event.value == "<<" and event.implicit[0]:
                return Problem(*where, "YAML merge keys (<<) are not accepted in trigger specs: write each key out")
            if isinstance(event, CollectionStartEvent | ScalarEvent) and event.tag is not None and \
                    not (isinstance(event, ScalarEvent) and event.tag == "!"):
                tag = str(event.tag).replace("tag:yaml.org,2002:", "!!")
                return Problem(*where, f"explicit YAML tags ({tag}) are not accepted in trigger specs: "
                                       "quote a value to make it text")
    except YAMLError:
        pass
    return None


def _events(text: str) -> Iterator[Event]:
    """The C parser's events, one at a time: nothing is composed or constructed."""
    parser = CParser(text)
    try:
        while parser.check_event():
            yield parser.get_event()
    finally:
        parser.dispose()


def nesting_problem(text: str) -> Problem | None:
    """Where a YAML text (the operator's config) nests deeper than MAX_DEPTH."""
    return structure_problem(text, refuse=False)


def yaml_problem(e: MarkedYAMLError) -> Problem:
    """Where a YAML error is and what it is, in a person's words (shared with the servers config)."""
    context = e.context or ""
    if context.startswith("while parsing a flow") and e.context_mark is not None:  # an unclosed [ or {
        bracket = "[" if "sequence" in context else "{"
        return Problem(e.context_mark.line + 1, e.context_mark.column + 1,
                       f"this {bracket} is never closed ({e.problem})")
    mark = e.problem_mark or e.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = _one_line(e.problem or "invalid YAML")
    if problem.startswith("found duplicate key"):
        problem = problem.split(" with value", 1)[0].replace("found duplicate key", "duplicate key")
    return Problem(line, col, problem)


def reader_problem(text: str, e: ReaderError) -> Problem:
    """A character YAML does not allow, at its line and column (the reader counts UTF-8 bytes), named
    by its code point: the character itself, a control character, would act on the reader's terminal."""
    position = e.position if isinstance(e.position, int) else 0
    before = text.encode("utf-8", "surrogatepass")[:max(0, position)].decode("utf-8", "ignore")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    if isinstance(e.character, bytes):
        return Problem(line, column, f"not UTF-8 text (byte #x{ord(e.character[:1] or b'0'):02x})")
    kind = "a control character" if e.character < 0x20 or 0x7F <= e.character <= 0x9F else "a character"
    return Problem(line, column, f"invalid YAML: {kind} (U+{e.character:04X}) YAML does not allow: write it "
                                 f"as an escape in a double-quoted string (\\x{e.character:02x}), or remove it")


def _one_line(message: str) -> str:
    """A message on one line: every line of `validate`'s output starts with a position."""
    return " ".join(message.split())


def _locate(text: str, errors: list[Any]) -> list[Problem]:
    """Put each validation error on its line and column, from the C parser's marks (`_positions`)."""
    places = _positions(text, max(len(_value_loc(tuple(err["loc"]))) for err in errors))
    problems = []
    for err in errors:
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            hint = difflib.get_close_matches(key, KNOWN_KEYS if len(loc) == 1 else (), n=1)
            message = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                f"; known keys: {', '.join(KNOWN_KEYS)}")
            line, col = _position(places, loc, key=True)
        elif kind == "missing":
            message = f"missing required key {loc[-1]!r}"
            line, col = _position(places, loc[:-1], key=False)
        else:
            message = _describe(loc, err)
            if loc and loc[-1] == "[key]":  # a mapping key that is wrong itself: point at the key
                line, col = _position(places, _value_loc(loc[:-1]), key=True)
            else:
                line, col = _position(places, _value_loc(loc), key=False)
        problems.append(Problem(line, col, message))
    found = sorted(set(problems), key=lambda p: (p.line, p.column, p.message))
    if len(found) > MAX_PROBLEMS:
        last = found[MAX_PROBLEMS - 1]
        found = [*found[:MAX_PROBLEMS], Problem(last.line, last.column,
                                                f"and {len(found) - MAX_PROBLEMS} more problems like these")]
    return found


Place = tuple[tuple[int, int], tuple[int, int]]
"""Where a key is, and where its value is (line, column; from 1)."""


def _positions(text: str, depth: int) -> dict[tuple[str, ...], Place]:
    """Where each key and value down to `depth` levels is, by its path of keys as text (list items by
    index): one pass of the C parser's events, each carrying its mark. Bounded like the parse: the node
    budget was checked before anything was built."""
    places: dict[tuple[str, ...], Place] = {(): ((1, 1), (1, 1))}
    # Per open collection: its path (None inside a key that is itself a collection), whether a mapping
    # waits for a key, the last key (or the next index), and where that key is.
    stack: list[list[Any]] = []
    try:
        for event in _events(text):
            if isinstance(event, CollectionEndEvent):
                stack.pop()
                continue
            if not isinstance(event, NodeEvent):
                continue
            here = (event.start_mark.line + 1, event.start_mark.column + 1)
            path: tuple[str, ...] | None = ()
            if stack:
                top = stack[-1]
                if top[0] is None:
                    path = None
                elif top[1] is None:  # a sequence: items by index
                    path = (*top[0], str(top[2]))
                    top[2] += 1
                elif top[1]:  # a mapping's key
                    top[1] = False
                    top[2], top[3] = (event.value, here) if isinstance(event, ScalarEvent) else (None, here)
                    path = None
                else:  # a mapping's value
                    top[1] = True
                    path = None if top[2] is None else (*top[0], top[2])
                    if path is not None and len(path) <= depth:
                        places.setdefault(path, (top[3], here))
            if isinstance(event, CollectionStartEvent):
                deeper = path if path is not None and len(path) < depth else None
                stack.append([deeper, isinstance(event, MappingStartEvent) or None, 0, here])
    except YAMLError:
        pass
    return places


def _position(places: dict[tuple[str, ...], Place], loc: tuple[Any, ...], *, key: bool) -> tuple[int, int]:
    """The deepest position known along `loc`: its key's (or value's) where found, else its parent's."""
    line_col = places[()][1]
    for i in range(1, len(loc) + 1):
        place = places.get(tuple(str(part) for part in loc[:i]))
        if place is None:
            break
        line_col = place[0] if (key and i == len(loc)) else place[1]
    return line_col


def _value_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Pydantic names union members (`parameters.X.str`); keep only the path into the document."""
    return tuple(part for i, part in enumerate(loc) if not (i >= 2 and loc[0] == "parameters"))


def _describe(loc: tuple[Any, ...], err: Any) -> str:
    where = ".".join(str(p) for p in _value_loc(loc))
    if not loc:
        return err["msg"].removeprefix("Value error, ")
    if loc[0] == "parameters" and loc[-1] == "[key]":
        return f"parameters: a parameter name is text, not {yaml_type(err['input'])}: quote it"
    if loc[0] == "parameters" and len(loc) > 1:
        return f"{where}: a parameter value is a string, number or boolean, not {yaml_type(err['input'])}"
    if loc[0] == "provenance_parameters" and loc[-1] == "[key]":
        return (f"provenance_parameters: {err['input']!r} is not a commit field; "
                f"fields: {', '.join(PROVENANCE_FIELDS)}")
    if loc[0] == "parameters" and err["type"] != "value_error":
        return "parameters: expected a mapping of NAME: value"
    expected = {"job": "a string", "server": "a string", "cause": "a string", "run": "an integer ≥ 1",
                "suspend": "true or false", "run_id_parameter": "a string", "schedule": "a string",
                "timezone": "a string", "starting_deadline": "a string",
                "scheduled_time_parameter": "a string", "pause_after_failures": "an integer from 1 to 1000",
                "provenance_parameters": "a mapping of commit fields (sha, author, email, date, subject) to "
                                         "parameter names"}.get(str(loc[0]) if loc else "")
    if err["type"] == "string_too_short":
        return f"{where}: is empty"
    if loc[0] == "concurrency" and err["type"] == "literal_error":
        return f"concurrency: expected allow, forbid or replace, got {err['input']!r}"
    if expected and err["type"] in ("greater_than_equal", "less_than_equal"):
        return f"{where}: expected {expected}, got {err['input']}"
    if expected and err["type"] != "value_error":
        return f"{where}: expected {expected}, got {yaml_type(err['input'])}"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def position_in(text: str, *loc: str, value: bool = False) -> tuple[int, int]:
    """Line and column of a key (or, with `value`, of its value) in a spec's text, `position_in(text,
    "parameters", "ENV")`, for an error found after parsing; the top of the file where there is none."""
    return _position(_positions(text, len(loc)), loc, key=not value)


def json_schema() -> dict[str, Any]:
    schema = SpecModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


_ENDPOINTS = ("build", "buildWithParameters", "api", "configure", "lastBuild", "")
"""What may follow a job in its URL, copied along with it."""


def job_path(written: str) -> tuple[str, list[str]]:
    """A job as people copy it, as the reconciler names it, and the views dropped on the way. In the
    form of a job's URL path (`job/a/job/b`, segments URL-encoded, perhaps after a Jenkins root or a
    `view/NAME/`, perhaps with `/buildWithParameters` after it) it means `a/b`: views are dropped, for
    Jenkins finds a job by its folders. Any other text is a `folder/job` path as it is."""
    parts = [seg for seg in written.split("/") if seg]
    starts = [i for i, seg in enumerate(parts) if seg in ("job", "view")]
    if not starts or (parts[0] not in ("job", "view") and not _URL.match(written) and not written.startswith("/")):
        return written, []
    parts = parts[starts[0]:]
    dropped: list[str] = []
    while len(parts) >= 2 and parts[0] == "view":
        dropped.append(f"view/{parts[1]}/")
        parts = parts[2:]
    if not parts or parts[0] != "job":
        return "/".join(parts), dropped
    names = []
    while len(parts) >= 2 and parts[0] == "job":
        names.append(unquote(parts[1]))
        parts = parts[2:]
    if parts and parts[0] not in _ENDPOINTS:
        raise ValueError(f"in a job written as its URL path, `{'/'.join(parts)}` follows `job/{names[-1]}`: "
                         "write each folder as `job/NAME`, or the path plainly, `folder/sub/job`")
    return "/".join(names), dropped


def job_notes(written: Any) -> tuple[str, ...]:
    """What validate says about a job written as its URL path: how it was read."""
    if not isinstance(written, str):
        return ()
    try:
        job, dropped = job_path(written)
    except ValueError:
        return ()
    if job == written:
        return ()
    views = f"; {' and '.join(f'`{v}`' for v in dropped)} dropped: Jenkins finds a job by its folders, not its " \
            "views" if dropped else ""
    return (f"job {written!r} read as `job: {job}`{views}",)


def job_url(base: str, job: str) -> str:
    """`a b/ü` → `<base>job/a%20b/job/%C3%BC/`: every folder segment encoded on its own."""
    return base + "".join(f"job/{quote(seg, safe='')}/" for seg in job.split("/"))
