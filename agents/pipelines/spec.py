"""Pipeline specs: the format, its checks, and its expansion into plain steps (one task each).

A spec is JSON or YAML (anchors and aliases are refused). Everything but `steps` is optional:

    name: content                      # 1-200 characters
    defaults:                          # apply to every step unless it says otherwise
      timeout: 300                     # seconds per attempt (0.1-3600): the attempt is stopped
      retries: 2                       # attempts after the first (0-20), with jittered back-off
      lease_seconds: 30                # the task lease (2-3600), renewed by heartbeats
      stagger_ms: 0                    # random delay before a step starts (0-60000)
      priority: 0
    inputs:                            # run inputs: artifact name -> workspace file (must exist)
      notes: notes/solar.md
    rate_limits:                       # buckets of this workspace (the server's, e.g. `llm`, are shared)
      search-api: {rate: 2, burst: 4}  # tokens per second, capacity
    steps:                             # a list of steps with `id`, or a mapping id -> step
      - id: research                   # [A-Za-z0-9][A-Za-z0-9_-]{0,63}
        agent: llm                     # a registered agent (agents/registry.py)
        params: {instruction: "Summarise the notes."}
        inputs: [notes, "file:docs/brief.md"]   # artifacts, or workspace files by path
        outputs: [summary]             # artifacts this step produces (names unique in the run)
        depends_on: [other-step]       # ordering without data (inputs already imply it)
        validate: {min_words: 30, contains: [solar]}   # must pass before dependents start
        publish: {summary: "output/summary.md"}        # also write it there, create-only
        requires_approval: false       # dependents wait for an admin's approval
        rate_limit: llm                # the bucket to take a token from (null: none)
        timeout: 60
        retries: 1

Dependencies come from the data: a step that reads an artifact runs after the step that
produces it. The plan is checked as a whole before anything is created; each problem is a 400
naming it: `unknown_agent`, `dependency_cycle`, `missing_input` (an artifact nobody produces,
or a file that does not exist), `output_collision` (two steps producing one artifact, or
publishing to one path), `unknown_step`, `invalid_spec`.

Where outputs go: artifact `a` of the step whose task is `T` is written, create-only, to
`pipelines/<run-id>/<T>/a`: the task id is in the path, so two steps never share a path, and a
retry of the same task finds its own earlier output (identical content is a no-op).

Patterns expand into plain steps. Each is one spec step with one of these keys:

  fan_out (one input to N agents, then an aggregator):
      - id: sentiment
        inputs: [review]
        outputs: [verdict]
        fan_out:
          agents:                      # names, or {agent, params, weight, id}
            - {agent: python, params: {function: keyword_label}, weight: 2}
            - sleep
          aggregate: vote              # vote | weighted_merge | summary | concat | any agent,
                                       # or {agent: summary, params: {instruction: ...}}
    -> tasks sentiment.1 ... sentiment.N (each reads `review`), then `sentiment` (the aggregator,
       reading every branch's output, producing `verdict`).

  stages (a staged pipeline: per-item stages, so item 2 is in stage 1 while item 1 is in stage 2):
      - id: articles
        outputs: [article]             # optional: then a collector joins the items' results
        stages:
          items: [solar, wind, storage]          # strings or objects; {item}, {item.x}, {index}
          concurrency: 1                          # items a stage works on at once (null: any)
          steps:
            - {id: research, agent: llm, inputs: ["file:notes/{item}.md"]}
            - {id: write, agent: python, params: {function: write_section}}
          collect: {agent: concat}                # the default
    -> tasks articles.1.research, articles.1.write, articles.2.research, ...; stage k of an item
       reads stage k-1's output of the same item; with `concurrency: c`, item i waits for item
       i-c in the same stage. Then `articles` (the collector) if outputs are declared.

  compete (N attempts at one step; a scorer picks the best, the others are cancelled):
      - id: headline
        agent: llm
        inputs: [summary]
        outputs: [title]
        compete:
          attempts: 3
          vary: [{instruction: "..."}, {instruction: "..."}]   # per-attempt params (optional)
          scorer: keywords                        # or {name: keywords, params: {keywords: [..]}}
          first_good_wins: true                   # the first attempt scoring >= good_enough wins
          good_enough: 0.8                        # at once: the other attempts are stopped
    -> tasks headline.try1 ... headline.tryN, then `headline` (the judge: it takes the winner's
       output as `title`). Without first_good_wins the judge waits for every attempt and keeps
       the highest score.

A plain step's id is its task's step key; a pattern's expanded keys are `<id>.<...>` as above,
and depending on a pattern step waits for its aggregator, judge or collector (or, for stages
without a collector, every item's last stage).
"""
from __future__ import annotations

import heapq
import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import yaml

from agents import registry
from workspace.errors import Invalid
from workspace.paths import validate_path
from workspace.services.tasks import clean_json

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
FILE_PREFIX = "file:"
MAX_SPEC_BYTES = 256 * 1024
MAX_STEPS = 1000
MAX_FAN_OUT = 100
MAX_ITEMS = 300
MAX_STAGES = 20
MAX_ATTEMPTS = 20
DEFAULTS = {"timeout": 300.0, "retries": 2, "lease_seconds": 30, "stagger_ms": 0, "priority": 0}
_TOP_KEYS = {"name", "description", "defaults", "inputs", "rate_limits", "steps"}
_POLICY_KEYS = {"timeout", "retries", "lease_seconds", "stagger_ms", "priority", "requires_approval",
                "rate_limit", "validate", "estimate"}
_STEP_KEYS = {"id", "title", "agent", "params", "inputs", "outputs", "depends_on", "publish", "fan_out",
              "stages", "compete"} | _POLICY_KEYS
_STAGE_KEYS = {"id", "title", "agent", "params", "inputs"} | _POLICY_KEYS
_VALIDATE_KEYS = {"non_empty", "min_words", "max_words", "min_bytes", "max_bytes", "contains", "not_contains",
                  "regex", "json", "function", "params"}
_TEMPLATE = re.compile(r"\{(item|index|run)(?:\.([A-Za-z0-9_]+))?\}")


def fail(code: str, message: str, **details: Any) -> NoReturn:
    raise Invalid(code, message, **details)


@dataclass
class PlannedStep:
    key: str
    title: str
    agent: str
    role: str  # step | branch | aggregate | stage | collect | attempt | judge
    group: str
    params: dict[str, Any]
    inputs: list[str]
    outputs: list[str]
    publish: dict[str, str]
    validate: dict[str, Any] | None
    timeout: float
    max_attempts: int
    lease_seconds: int
    requires_approval: bool
    rate_limit: str | None
    stagger_ms: int
    priority: int
    estimate: float
    item: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Filled in by the resolution pass.
    after: list[str] = field(default_factory=list)       # logical: waves and critical path
    task_deps: list[str] = field(default_factory=list)   # the task graph's dependencies
    wave: int = 0
    # Expansion-time bookkeeping.
    spec_after: list[str] = field(default_factory=list)
    internal_after: list[str] = field(default_factory=list)

    def config(self) -> dict[str, Any]:
        return {
            "title": self.title, "params": self.params, "inputs": self.inputs, "outputs": self.outputs,
            "publish": self.publish, "validate": self.validate, "timeout": self.timeout,
            "max_attempts": self.max_attempts, "lease_seconds": self.lease_seconds,
            "rate_limit": self.rate_limit, "stagger_ms": self.stagger_ms, "estimate": self.estimate,
            "item": self.item, "after": self.after, **self.extra,
        }


@dataclass
class Plan:
    name: str
    steps: list[PlannedStep]
    waves: list[list[str]]
    artifacts: dict[str, str]  # artifact -> producing step key, or "file:<path>"
    files: list[str]           # workspace files the run reads: each must exist at submission
    rate_limits: dict[str, dict[str, float]]


# -- parsing --------------------------------------------------------------------------------
class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a few bytes of aliases can expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def load_spec(raw: Any) -> dict[str, Any]:
    """A spec object from a dict, or from JSON or YAML text."""
    if isinstance(raw, str):
        if len(raw.encode("utf-8")) > MAX_SPEC_BYTES:
            fail("invalid_spec", f"A spec is at most {MAX_SPEC_BYTES} bytes.")
        try:
            raw = yaml.load(raw, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            fail("invalid_spec", f"The spec is not valid YAML or JSON: {str(exc).splitlines()[0]}")
    if not isinstance(raw, dict):
        fail("invalid_spec", "The spec must be an object with 'steps'.")
    try:
        json.dumps(raw, allow_nan=False)
    except (TypeError, ValueError):
        fail("invalid_spec", "The spec must be plain JSON data (no dates, NaN or infinities).")
    try:
        # Every string storable by every database (no NUL, no lone surrogates), nesting and size bounded.
        clean_json(raw, "spec", max_bytes=MAX_SPEC_BYTES)
    except Invalid as exc:
        fail("invalid_spec", exc.message)
    return raw


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _obj(value: Any, where: str, allowed: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail("invalid_spec", f"'{where}' must be an object.", field=where)
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            fail("invalid_spec", f"'{where}' has unknown key(s): {', '.join(map(str, unknown))}.", field=where,
                 allowed=sorted(allowed))
    return value


def _str(value: Any, where: str, *, max_length: int = 500, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_length or "\x00" in value:
        fail("invalid_spec", f"'{where}' must be a non-empty string of at most {max_length} characters.", field=where)
    if pattern is not None and not pattern.match(value):
        fail("invalid_spec", f"'{where}' ({value!r}) must match {pattern.pattern}.", field=where)
    return value


def _num(value: Any, where: str, *, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not lo <= value <= hi:
        fail("invalid_spec", f"'{where}' must be a number from {lo:g} to {hi:g}.", field=where)
    return float(value)


def _int(value: Any, where: str, *, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        fail("invalid_spec", f"'{where}' must be a whole number from {lo} to {hi}.", field=where)
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        fail("invalid_spec", f"'{where}' must be true or false.", field=where)
    return value


def _strs(value: Any, where: str, *, max_items: int = 1000) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > max_items:
        fail("invalid_spec", f"'{where}' must be a list of at most {max_items} strings.", field=where)
    return [_str(v, f"{where}[{i}]", max_length=1100) for i, v in enumerate(value)]


def _params(value: Any, where: str) -> dict[str, Any]:
    return dict(_obj(value, where)) if value is not None else {}


def _template(value: Any, *, item: Any, index: int | None, run_id: str) -> Any:
    """Substitute {item}, {item.key}, {index} and {run} in every string of `value` (a fixed set of
    names: no attribute access or formatting language)."""
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name, attr = match.group(1), match.group(2)
            if name == "run":
                return run_id
            if name == "index":
                return str(index) if index is not None else match.group(0)
            if item is None:
                return match.group(0)
            if attr is None:
                return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
            if isinstance(item, dict) and attr in item:
                inner = item[attr]
                return inner if isinstance(inner, str) else json.dumps(inner, ensure_ascii=False)
            fail("invalid_spec", f"The item {json.dumps(item)[:80]} has no field {attr!r}.")
        return _TEMPLATE.sub(replace, value)
    if isinstance(value, list):
        return [_template(v, item=item, index=index, run_id=run_id) for v in value]
    if isinstance(value, dict):
        return {k: _template(v, item=item, index=index, run_id=run_id) for k, v in value.items()}
    return value


def _parse_validate(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    rules = dict(_obj(value, where, _VALIDATE_KEYS))
    for name in ("non_empty", "json"):
        if name in rules:
            _bool(rules[name], _where(where, name))
    for name in ("min_words", "max_words", "min_bytes", "max_bytes"):
        if name in rules:
            _int(rules[name], _where(where, name), lo=0, hi=10**9)
    for name in ("contains", "not_contains"):
        if name in rules:
            rules[name] = _strs(rules[name], _where(where, name), max_items=100)
    if "regex" in rules:
        try:
            re.compile(_str(rules["regex"], _where(where, "regex")))
        except re.error as exc:
            fail("invalid_spec", f"'{where}.regex' is not a valid regular expression: {exc}.", field=where)
    if "function" in rules and registry.get_validator(rules["function"]) is None:
        fail("unknown_validator", f"No validator named {rules['function']!r} is registered.",
             field=_where(where, "function"), known=registry.validator_names())
    if "params" in rules:
        _params(rules["params"], _where(where, "params"))
    return rules


@dataclass
class _Policy:
    timeout: float
    max_attempts: int
    lease_seconds: int
    stagger_ms: int
    priority: int
    requires_approval: bool
    rate_limit: Any  # a name, None (none), or ... (the agent's default)
    validate: dict[str, Any] | None
    estimate: float | None


def _policy(raw: dict[str, Any], where: str, base: _Policy) -> _Policy:
    def pick(name: str, parse: Any) -> Any:
        return parse(raw[name], _where(where, name)) if name in raw else getattr(base, name)

    retries = _int(raw["retries"], _where(where, "retries"), lo=0, hi=MAX_ATTEMPTS) + 1 \
        if "retries" in raw else base.max_attempts
    rate_limit: Any = base.rate_limit
    if "rate_limit" in raw:
        rate_limit = None if raw["rate_limit"] is None else _str(raw["rate_limit"], _where(where, "rate_limit"),
                                                                  max_length=60, pattern=registry.NAME_RE)
    return _Policy(
        timeout=pick("timeout", lambda v, w: _num(v, w, lo=0.1, hi=3600)),
        max_attempts=retries,
        lease_seconds=pick("lease_seconds", lambda v, w: _int(v, w, lo=2, hi=3600)),
        stagger_ms=pick("stagger_ms", lambda v, w: _int(v, w, lo=0, hi=60000)),
        priority=pick("priority", lambda v, w: _int(v, w, lo=-1_000_000, hi=1_000_000)),
        requires_approval=pick("requires_approval", _bool),
        rate_limit=rate_limit,
        validate=_parse_validate(raw["validate"], _where(where, "validate")) if "validate" in raw else base.validate,
        estimate=pick("estimate", lambda v, w: _num(v, w, lo=0, hi=10**6)),
    )


# -- expansion ------------------------------------------------------------------------------
class _Builder:
    def __init__(self, *, run_id: str, trusted: bool, rate_limits: dict[str, Any], server_buckets: set[str]) -> None:
        self.run_id = run_id
        self.trusted = trusted
        self.rate_limits = rate_limits
        self.server_buckets = server_buckets
        self.steps: list[PlannedStep] = []
        self.entries: dict[str, list[str]] = {}
        self.exits: dict[str, list[str]] = {}

    def agent(self, name: Any, where: str) -> registry.AgentDef:
        if not isinstance(name, str) or not name:
            fail("invalid_spec", f"'{where}' must name an agent.", field=where)
        found = registry.get_agent(name)
        if found is None:
            fail("unknown_agent", f"{where}: no agent named {name!r} is registered.", field=where, agent=name,
                 known=registry.agent_names())
        return found

    def add(self, *, key: str, title: str, agent: str, where: str, role: str, group: str, params: dict[str, Any],
            inputs: list[str], outputs: list[str], policy: _Policy, publish: dict[str, str] | None = None,
            item: Any = None, extra: dict[str, Any] | None = None, approval: bool = False,
            validate: bool = True) -> PlannedStep:
        definition = self.agent(agent, where)
        rate_limit = definition.rate_limit if policy.rate_limit is ... else policy.rate_limit
        if rate_limit is not None and rate_limit not in self.server_buckets and rate_limit not in self.rate_limits:
            fail("unknown_rate_limit", f"{where}: no rate limit named {rate_limit!r} (the server has "
                 f"{', '.join(sorted(self.server_buckets)) or 'none'}; declare others under 'rate_limits').",
                 field=_where(where, "rate_limit"))
        if len(inputs) < definition.min_inputs:
            fail("missing_input", f"{where}: the agent {agent!r} needs at least {definition.min_inputs} input(s).",
                 step=key)
        if definition.check is not None:
            definition.check(params, {"where": where, "trusted": self.trusted, "inputs": len(inputs),
                                      "outputs": outputs, "role": role})
        estimate = policy.estimate
        if estimate is None:
            seconds = params.get("seconds")
            estimate = float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else 1.0
        step = PlannedStep(
            key=key, title=title[:300], agent=agent, role=role, group=group, params=params, inputs=inputs,
            outputs=outputs, publish=publish or {}, validate=policy.validate if validate else None,
            timeout=policy.timeout, max_attempts=policy.max_attempts, lease_seconds=policy.lease_seconds,
            requires_approval=approval, rate_limit=rate_limit, stagger_ms=policy.stagger_ms,
            priority=policy.priority, estimate=estimate, item=item, extra=extra or {},
        )
        self.steps.append(step)
        return step


def _inputs(value: Any, where: str, *, item: Any = None, index: int | None = None, run_id: str) -> list[str]:
    names = []
    for i, raw in enumerate(_strs(value, where, max_items=1000)):
        name = _template(raw, item=item, index=index, run_id=run_id)
        if name.startswith(FILE_PREFIX):
            validate_path(name[len(FILE_PREFIX):])
        elif not ARTIFACT_RE.match(name):
            fail("invalid_spec", f"'{where}[{i}]' ({name!r}) must be an artifact name ({ARTIFACT_RE.pattern}) or "
                 "'file:<workspace path>'.", field=f"{where}[{i}]")
        names.append(name)
    if len(set(names)) != len(names):
        fail("invalid_spec", f"'{where}' lists an input twice.", field=where)
    return names


def _outputs(value: Any, where: str) -> list[str]:
    names = [_str(v, f"{where}[{i}]", max_length=100, pattern=ARTIFACT_RE)
             for i, v in enumerate(_strs(value, where, max_items=100))]
    if len(set(names)) != len(names):
        fail("output_collision", f"'{where}' lists an output twice.", field=where)
    return names


def _agent_entry(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"agent": value}
    entry = dict(_obj(value, where, {"agent", "params", "weight", "id"} | _POLICY_KEYS))
    if "agent" not in entry:
        fail("invalid_spec", f"'{where}' must name an agent.", field=where)
    return entry


def _expand_step(b: _Builder, sid: str, raw: dict[str, Any], where: str, base: _Policy) -> None:
    patterns = [k for k in ("fan_out", "stages", "compete") if k in raw]
    if len(patterns) > 1:
        fail("invalid_spec", f"'{where}' may use one of fan_out, stages and compete, not {' and '.join(patterns)}.",
             field=where)
    policy = _policy(raw, where, base)
    params = _params(raw.get("params"), _where(where, "params"))
    inputs = _inputs(raw.get("inputs"), _where(where, "inputs"), run_id=b.run_id)
    outputs = _outputs(raw.get("outputs"), _where(where, "outputs"))
    if patterns and not outputs and patterns[0] != "stages":
        outputs = [sid]
    publish = {}
    for name, path in _obj(raw.get("publish") or {}, _where(where, "publish")).items():
        if name not in outputs:
            fail("invalid_spec", f"'{where}.publish' names {name!r}, which is not one of the step's outputs.",
                 field=_where(where, "publish"))
        publish[name] = validate_path(_template(_str(path, _where(where, f"publish.{name}"), max_length=1024),
                                                item=None, index=None, run_id=b.run_id))
    title = raw.get("title")
    title = _str(title, _where(where, "title")) if title is not None else sid
    depends = [_str(d, f"{where}.depends_on[{i}]", max_length=64) for i, d in
               enumerate(_strs(raw.get("depends_on"), _where(where, "depends_on"), max_items=1000))]
    approval = policy.requires_approval
    if not patterns:
        step = b.add(key=sid, title=title, agent=raw.get("agent"), where=_where(where, "agent"), role="step",
                     group="", params=params, inputs=inputs, outputs=outputs, policy=policy, publish=publish,
                     approval=approval)
        step.spec_after = depends
        b.entries[sid] = b.exits[sid] = [sid]
        return
    if patterns[0] == "fan_out":
        _expand_fan_out(b, sid, raw, where, policy, params, inputs, outputs, publish, title, depends)
    elif patterns[0] == "compete":
        _expand_compete(b, sid, raw, where, policy, params, inputs, outputs, publish, title, depends)
    else:
        _expand_stages(b, sid, raw, where, policy, params, inputs, outputs, publish, title, depends)


def _expand_fan_out(b: _Builder, sid: str, raw: dict[str, Any], where: str, policy: _Policy, params: dict[str, Any],
                    inputs: list[str], outputs: list[str], publish: dict[str, str], title: str,
                    depends: list[str]) -> None:
    w = _where(where, "fan_out")
    spec = _obj(raw["fan_out"], w, {"agents", "aggregate"})
    agents = spec.get("agents")
    if not isinstance(agents, list) or not 1 <= len(agents) <= MAX_FAN_OUT:
        fail("invalid_spec", f"'{w}.agents' must list 1 to {MAX_FAN_OUT} agents.", field=f"{w}.agents")
    branches = []
    for i, value in enumerate(agents):
        entry = _agent_entry(value, f"{w}.agents[{i}]")
        bid = _str(entry["id"], f"{w}.agents[{i}].id", max_length=64, pattern=ID_RE) if "id" in entry else str(i + 1)
        key = f"{sid}.{bid}"
        weight = _num(entry.get("weight", 1), f"{w}.agents[{i}].weight", lo=0, hi=1e6)
        branch_policy = _policy({k: v for k, v in entry.items() if k in _POLICY_KEYS}, f"{w}.agents[{i}]",
                                replace(policy, requires_approval=False, validate=None))
        step = b.add(key=key, title=f"{title} [{entry['agent']} {bid}]", agent=entry["agent"],
                     where=f"{w}.agents[{i}].agent", role="branch", group=sid,
                     params={**params, **_params(entry.get("params"), f"{w}.agents[{i}].params")},
                     inputs=list(inputs), outputs=[f"{key}.out"], policy=branch_policy, validate=True,
                     extra={"weight": weight})
        step.spec_after = depends
        branches.append(step)
    if len({s.key for s in branches}) != len(branches):
        fail("invalid_spec", f"'{w}.agents' gives two branches the same id.", field=f"{w}.agents")
    aggregate = spec.get("aggregate", "concat")
    agg = {"agent": aggregate} if isinstance(aggregate, str) else dict(_obj(aggregate, f"{w}.aggregate",
                                                                              {"agent", "params"}))
    agg_step = b.add(key=sid, title=f"{title} [{agg.get('agent')}]", agent=agg.get("agent"), where=f"{w}.aggregate",
                     role="aggregate", group=sid, params=_params(agg.get("params"), f"{w}.aggregate.params"),
                     inputs=[f"{s.key}.out" for s in branches], outputs=outputs, publish=publish, policy=policy,
                     approval=policy.requires_approval,
                     extra={"weights": {f"{s.key}.out": s.extra["weight"] for s in branches}})
    agg_step.internal_after = [s.key for s in branches]
    b.entries[sid] = [s.key for s in branches]
    b.exits[sid] = [sid]


def _expand_compete(b: _Builder, sid: str, raw: dict[str, Any], where: str, policy: _Policy,
                    params: dict[str, Any], inputs: list[str], outputs: list[str], publish: dict[str, str],
                    title: str, depends: list[str]) -> None:
    w = _where(where, "compete")
    spec = _obj(raw["compete"], w, {"attempts", "vary", "scorer", "first_good_wins", "good_enough"})
    attempts = _int(spec.get("attempts"), f"{w}.attempts", lo=1, hi=MAX_ATTEMPTS)
    vary = spec.get("vary") or []
    if not isinstance(vary, list) or len(vary) > attempts:
        fail("invalid_spec", f"'{w}.vary' must be a list of at most {attempts} params objects.", field=f"{w}.vary")
    scorer = spec.get("scorer", "length")
    scorer = {"name": scorer} if isinstance(scorer, str) else dict(_obj(scorer, f"{w}.scorer", {"name", "params"}))
    if registry.get_scorer(scorer.get("name")) is None:
        fail("unknown_scorer", f"{w}.scorer: no scorer named {scorer.get('name')!r} is registered.",
             field=f"{w}.scorer", known=registry.scorer_names())
    scorer_params = _params(scorer.get("params"), f"{w}.scorer.params")
    first_good = _bool(spec.get("first_good_wins", False), f"{w}.first_good_wins")
    good_enough = _num(spec["good_enough"], f"{w}.good_enough", lo=-1e9, hi=1e9) if "good_enough" in spec else None
    if first_good and good_enough is None:
        fail("invalid_spec", f"'{w}.first_good_wins' needs '{w}.good_enough', the score that wins.", field=w)
    judge_key = sid
    common = {"judge": judge_key, "scorer": scorer["name"], "scorer_params": scorer_params,
              "first_good_wins": first_good, "good_enough": good_enough}
    keys = []
    for i in range(attempts):
        key = f"{sid}.try{i + 1}"
        extra_params = _params(vary[i], f"{w}.vary[{i}]") if i < len(vary) else {}
        step = b.add(key=key, title=f"{title} [attempt {i + 1} of {attempts}]", agent=raw.get("agent"),
                     where=_where(where, "agent"), role="attempt", group=sid,
                     params={**params, **extra_params, "attempt": i + 1}, inputs=list(inputs),
                     outputs=[f"{key}.out"], policy=policy, validate=True, extra={**common, "attempt": i + 1})
        step.spec_after = depends
        keys.append(key)
    judge = b.add(key=judge_key, title=f"{title} [pick the best of {attempts}]", agent="select", where=w,
                  role="judge", group=sid, params={}, inputs=[f"{k}.out" for k in keys], outputs=outputs,
                  publish=publish, policy=policy, approval=policy.requires_approval, validate=False,
                  extra={**common, "attempts": keys})
    judge.internal_after = list(keys)
    b.entries[sid] = keys + [judge_key]
    b.exits[sid] = [judge_key]


def _expand_stages(b: _Builder, sid: str, raw: dict[str, Any], where: str, policy: _Policy, params: dict[str, Any],
                   inputs: list[str], outputs: list[str], publish: dict[str, str], title: str,
                   depends: list[str]) -> None:
    w = _where(where, "stages")
    spec = _obj(raw["stages"], w, {"items", "steps", "concurrency", "collect"})
    items = spec.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        fail("invalid_spec", f"'{w}.items' must list 1 to {MAX_ITEMS} items.", field=f"{w}.items")
    stages = spec.get("steps")
    if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
        fail("invalid_spec", f"'{w}.steps' must list 1 to {MAX_STAGES} stages.", field=f"{w}.steps")
    concurrency = spec.get("concurrency", 1)
    if concurrency is not None:
        concurrency = _int(concurrency, f"{w}.concurrency", lo=1, hi=MAX_ITEMS)
    # The step's own approval and validation are the collector's; a stage has its own, if any.
    stage_base = replace(policy, requires_approval=False, validate=None)
    parsed = []
    for k, stage in enumerate(stages):
        sw = f"{w}.steps[{k}]"
        stage = _obj(stage, sw, _STAGE_KEYS)
        stage_id = _str(stage.get("id"), f"{sw}.id", max_length=64, pattern=ID_RE)
        parsed.append((stage_id, stage, _policy(stage, sw, stage_base)))
    if len({p[0] for p in parsed}) != len(parsed):
        fail("invalid_spec", f"'{w}.steps' gives two stages the same id.", field=f"{w}.steps")
    last: list[str] = []
    for i, item in enumerate(items, start=1):
        previous: str | None = None
        for k, (stage_id, stage, stage_policy) in enumerate(parsed):
            sw = f"{w}.steps[{k}]"
            key = f"{sid}.{i}.{stage_id}"
            label = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
            stage_inputs = _inputs(stage.get("inputs"), f"{sw}.inputs", item=item, index=i, run_id=b.run_id)
            data = ([f"{previous}.out"] if previous else list(inputs)) + stage_inputs
            stage_params = _template({**params, **_params(stage.get("params"), f"{sw}.params")}, item=item,
                                     index=i, run_id=b.run_id)
            step = b.add(key=key, title=f"{stage.get('title') or stage_id} {label[:100]}", agent=stage.get("agent"),
                         where=f"{sw}.agent", role="stage", group=sid, params=stage_params, inputs=data,
                         outputs=[f"{key}.out"], policy=stage_policy, item=item,
                         approval=stage_policy.requires_approval, extra={"stage": stage_id, "index": i})
            step.internal_after = [previous] if previous else []
            if concurrency is not None and i > concurrency:
                step.internal_after.append(f"{sid}.{i - concurrency}.{stage_id}")
            if previous is None:
                step.spec_after = depends
            previous = key
        last.append(previous)  # type: ignore[arg-type]
    b.entries[sid] = [f"{sid}.{i}.{parsed[0][0]}" for i in range(1, len(items) + 1)]
    if outputs:
        collect = spec.get("collect", {"agent": "concat"})
        collect = {"agent": collect} if isinstance(collect, str) else dict(_obj(collect, f"{w}.collect",
                                                                                  {"agent", "params"}))
        step = b.add(key=sid, title=f"{title} [{collect.get('agent')}]", agent=collect.get("agent"),
                     where=f"{w}.collect", role="collect", group=sid,
                     params=_params(collect.get("params"), f"{w}.collect.params"),
                     inputs=[f"{k}.out" for k in last], outputs=outputs, publish=publish, policy=policy,
                     approval=policy.requires_approval)
        step.internal_after = list(last)
        b.exits[sid] = [sid]
    else:
        if publish:
            fail("invalid_spec", f"'{where}.publish' needs 'outputs' (and so a collector).", field=where)
        b.exits[sid] = last


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    for start in edges:
        if state.get(start):
            continue
        stack = [(start, iter(edges[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(edges[child])))
                path.append(child)
    return None


def build_plan(raw: Any, *, run_id: str, trusted: bool, server_buckets: set[str]) -> tuple[dict[str, Any], Plan]:
    """Check a spec and expand it into plain steps with dependencies, waves and artifacts."""
    spec = load_spec(raw)
    _obj(spec, "spec", _TOP_KEYS)
    name = _str(spec.get("name", "pipeline"), "name", max_length=200)
    if "description" in spec:
        _str(spec["description"], "description", max_length=5000)
    defaults_raw = _obj(spec.get("defaults") or {}, "defaults", _POLICY_KEYS)
    base = _Policy(timeout=DEFAULTS["timeout"], max_attempts=DEFAULTS["retries"] + 1,
                   lease_seconds=DEFAULTS["lease_seconds"], stagger_ms=DEFAULTS["stagger_ms"],
                   priority=DEFAULTS["priority"], requires_approval=False, rate_limit=..., validate=None,
                   estimate=None)
    base = _policy(defaults_raw, "defaults", base)
    rate_limits: dict[str, dict[str, float]] = {}
    for bucket, value in _obj(spec.get("rate_limits") or {}, "rate_limits").items():
        bw = f"rate_limits.{bucket}"
        _str(bucket, bw, max_length=60, pattern=registry.NAME_RE)
        value = _obj(value, bw, {"rate", "burst"})
        rate = _num(value.get("rate"), f"{bw}.rate", lo=0.001, hi=10_000)
        rate_limits[bucket] = {"rate": rate, "burst": _num(value.get("burst", max(1.0, rate)), f"{bw}.burst",
                                                           lo=1, hi=10_000)}
    run_inputs = {}
    for artifact, path in _obj(spec.get("inputs") or {}, "inputs").items():
        _str(artifact, f"inputs.{artifact}", max_length=100, pattern=ARTIFACT_RE)
        run_inputs[artifact] = validate_path(_str(path, f"inputs.{artifact}", max_length=1024))
    steps_raw = spec.get("steps")
    if isinstance(steps_raw, dict):
        steps_raw = [{**(_obj(v, f"steps.{k}")), "id": k} for k, v in steps_raw.items()]
    if not isinstance(steps_raw, list) or not steps_raw:
        fail("invalid_spec", "'steps' must be a non-empty list (or mapping) of steps.", field="steps")
    b = _Builder(run_id=run_id, trusted=trusted, rate_limits=rate_limits, server_buckets=server_buckets)
    seen: set[str] = set()
    for i, raw_step in enumerate(steps_raw):
        where = f"steps[{i}]"
        raw_step = _obj(raw_step, where, _STEP_KEYS)
        sid = _str(raw_step.get("id"), f"{where}.id", max_length=64, pattern=ID_RE)
        if sid in seen:
            fail("invalid_spec", f"Two steps have the id {sid!r}.", field=f"{where}.id")
        seen.add(sid)
        _expand_step(b, sid, raw_step, f"steps.{sid}", base)
        if len(b.steps) > MAX_STEPS:
            fail("too_many_steps", f"The spec expands to more than {MAX_STEPS} steps.", limit=MAX_STEPS)
    return spec, _resolve(b, name=name, run_inputs=run_inputs, rate_limits=rate_limits)


def _resolve(b: _Builder, *, name: str, run_inputs: dict[str, str], rate_limits: dict[str, Any]) -> Plan:
    by_key = {s.key: s for s in b.steps}
    artifacts: dict[str, str] = {a: FILE_PREFIX + p for a, p in run_inputs.items()}
    producer_of: dict[str, str] = {}
    for step in b.steps:
        for artifact in step.outputs:
            if artifact in artifacts:
                other = producer_of.get(artifact)
                fail("output_collision", f"The output {artifact!r} of {step.group or step.key} is also "
                     + (f"an output of {by_key[other].group or other}." if other else "a run input."),
                     output=artifact, steps=sorted({step.key, other or "inputs"}))
            artifacts[artifact] = step.key
            producer_of[artifact] = step.key
    published: dict[str, str] = {}
    for step in b.steps:
        for path in step.publish.values():
            if path in published and published[path] != step.key:
                fail("output_collision", f"Both {published[path]} and {step.key} publish to {path}.",
                     output=path, steps=sorted({published[path], step.key}))
            published[path] = step.key
    files: list[str] = []
    for step in b.steps:
        after: list[str] = []
        for name_ in step.inputs:
            if name_.startswith(FILE_PREFIX):
                files.append(name_[len(FILE_PREFIX):])
                continue
            source = artifacts.get(name_)
            if source is None:
                fail("missing_input", f"{step.group or step.key}: the input {name_!r} is not produced by any step "
                     "and is not a run input.", step=step.key, input=name_)
            if source.startswith(FILE_PREFIX):
                files.append(source[len(FILE_PREFIX):])
            else:
                after.append(source)
        for sid in step.spec_after:
            if sid not in b.exits:
                fail("unknown_step", f"{step.group or step.key}: depends_on names {sid!r}, which is not a step.",
                     step=step.key, depends_on=sid)
            after.extend(b.exits[sid])
        after.extend(step.internal_after)
        step.after = [k for k in dict.fromkeys(after) if k != step.key]
        step.task_deps = list(step.after)
    for step in b.steps:
        if step.role == "judge":
            # The judge waits for its attempts through the engine, not the task graph: a cancelled
            # or failed attempt must not cancel it (see agents/pipelines/competition.py).
            upstream = {d for k in step.extra["attempts"] for d in by_key[k].task_deps}
            step.task_deps = sorted(upstream)
    cycle = _find_cycle({s.key: s.after for s in b.steps})
    if cycle is not None:
        names = [by_key[k].group or k for k in cycle]
        names = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
        fail("dependency_cycle", f"The steps depend on each other in a cycle: {' -> '.join(names)}.", cycle=names)
    order = _topological(b.steps)
    waves: list[list[str]] = []
    for step in order:
        step.wave = 1 + max((by_key[d].wave for d in step.after), default=-1)
        while len(waves) <= step.wave:
            waves.append([])
        waves[step.wave].append(step.key)
    return Plan(name=name, steps=order, waves=waves, artifacts=artifacts, files=sorted(set(files)),
                rate_limits=rate_limits)


def _topological(steps: list[PlannedStep]) -> list[PlannedStep]:
    """Kahn's order, stable in spec order: the task board lists the run wave by wave."""
    position = {s.key: i for i, s in enumerate(steps)}
    by_key = {s.key: s for s in steps}
    pending = {s.key: len(s.after) for s in steps}
    dependents: dict[str, list[str]] = {s.key: [] for s in steps}
    for s in steps:
        for d in s.after:
            dependents[d].append(s.key)
    ready = [(position[k], k) for k, n in pending.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, key = heapq.heappop(ready)
        order.append(by_key[key])
        for child in dependents[key]:
            pending[child] -= 1
            if pending[child] == 0:
                heapq.heappush(ready, (position[child], child))
    return order
