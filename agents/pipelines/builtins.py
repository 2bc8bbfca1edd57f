"""The built-in agents, aggregators, scorers and functions. All of them work offline.

Agents: `command` (a program in the step's scratch directory), `llm` (an instruction to the LLM
provider), `python` (a registered function), `sleep` (benchmarks and tests), `copy`.
Aggregators (fan-in): `vote` (majority vote, for classification), `weighted_merge` (scored
recommendations), `summary` (through the LLM provider), `concat`. The judge of competitive steps:
`select`. Scorers: `length`, `keywords`, `json_field`. Functions for `python`: `keyword_label`,
`keyword_scores`, `word_count`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from typing import Any

from agents import registry
from agents.pipelines.conf import command_allowlist
from agents.pipelines.context import AgentResult, Input, StepContext, StepError, Stopped
from agents.pipelines.spec import fail

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_STREAM_TAIL = 4000


def _text(value: Any, name: str, where: str, *, required: bool = False, max_length: int = 20000) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        fail("invalid_spec", f"'{where}.params.{name}' must be text of at most {max_length} characters.",
             field=f"{where}.params.{name}")


def _only(params: dict[str, Any], allowed: set[str], info: dict[str, Any]) -> None:
    unknown = sorted(set(params) - allowed - {"attempt"})
    if unknown:
        fail("invalid_spec", f"'{info['where']}': the agent does not take {', '.join(unknown)} "
             f"(it takes {', '.join(sorted(allowed)) or 'no params'}).", field=info["where"])


def _local_name(item: Input) -> str:
    """The file name of an input inside the scratch directory's in/."""
    return item.name[len("file:"):].replace("/", "__") if item.name.startswith("file:") else item.name


# -- command -----------------------------------------------------------------------------------
def _check_command(params: dict[str, Any], info: dict[str, Any]) -> None:
    _only(params, {"argv", "env", "stdout"}, info)
    argv = params.get("argv")
    if not isinstance(argv, list) or not 1 <= len(argv) <= 200 or not all(isinstance(a, str) and a and "\x00" not in a
                                                                           for a in argv):
        fail("invalid_spec", f"'{info['where']}.params.argv' must be a list of 1-200 non-empty strings.",
             field=f"{info['where']}.params.argv")
    env = params.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", k)
                                            and isinstance(v, str) for k, v in env.items()):
        fail("invalid_spec", f"'{info['where']}.params.env' maps UPPER_CASE names to strings.",
             field=f"{info['where']}.params.env")
    stdout = params.get("stdout")
    if stdout is not None and stdout not in info["outputs"]:
        fail("invalid_spec", f"'{info['where']}.params.stdout' must be one of the step's outputs.",
             field=f"{info['where']}.params.stdout")
    if not info["trusted"] and argv[0] not in command_allowlist():
        fail("command_not_allowed", f"{info['where']}: running {argv[0]!r} needs an operator (a superuser, or "
             "manage.py run_pipeline), or the program in the server's PIPELINE_COMMANDS allowlist.",
             program=argv[0])


@registry.agent("command", kind="command", check=_check_command,
                description="Runs a program in the step's scratch directory: inputs in in/, outputs from out/.")
def command(ctx: StepContext) -> AgentResult:
    params = ctx.params
    inbox, outbox, tmp = ctx.scratch / "in", ctx.scratch / "out", ctx.scratch / "tmp"
    for directory in (inbox, outbox, tmp):
        directory.mkdir(parents=True, exist_ok=True)
    for item in ctx.inputs:
        (inbox / _local_name(item)).write_bytes(item.data)
    # Its own environment: nothing of the worker's (database URLs, keys) leaks into the program.
    env = {"PATH": SAFE_PATH, "HOME": str(ctx.scratch), "TMPDIR": str(tmp), "LANG": "C.UTF-8",
           "SWITCHYARD_RUN": ctx.run_id, "SWITCHYARD_STEP": ctx.key, "SWITCHYARD_TASK_ID": ctx.task_id,
           "SWITCHYARD_ATTEMPT": str(ctx.attempt), "SWITCHYARD_INPUTS": str(inbox),
           "SWITCHYARD_OUTPUTS": str(outbox),
           "SWITCHYARD_ITEM": ctx.item if isinstance(ctx.item, str) else json.dumps(ctx.item),
           **params.get("env", {})}
    argv = list(params["argv"])
    program = shutil.which(argv[0], path=env["PATH"]) if "/" not in argv[0] else argv[0]
    if program is None:
        raise StepError(f"the program {argv[0]!r} is not on PATH ({env['PATH']})", retry=False)
    stdout_path, stderr_path = ctx.scratch / "stdout.log", ctx.scratch / "stderr.log"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        try:
            proc = subprocess.Popen([program, *argv[1:]], cwd=ctx.scratch, env=env, stdin=subprocess.DEVNULL,  # noqa: S603
                                    stdout=out, stderr=err, start_new_session=True)
        except OSError as exc:
            raise StepError(f"could not start {argv[0]!r}: {exc}", retry=False) from exc
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.05)
                    break
                except subprocess.TimeoutExpired:
                    if ctx.stop.is_set():
                        raise Stopped(ctx.stop_reason or "stopped") from None
        finally:
            if proc.poll() is None:
                # Its own session: the whole process group goes, children included.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    stderr_tail = stderr_path.read_bytes()[-MAX_STREAM_TAIL:].decode("utf-8", errors="replace")
    if code != 0:
        raise StepError(f"{argv[0]} exited with status {code}" + (f"; stderr:\n{stderr_tail}" if stderr_tail else ""))
    outputs: dict[str, bytes | str] = {}
    for name in ctx.output_names:
        if name == params.get("stdout"):
            outputs[name] = stdout_path.read_bytes()
            continue
        path = outbox / name
        if not path.is_file():
            raise StepError(f"{argv[0]} did not write the output {name!r} (expected $SWITCHYARD_OUTPUTS/{name})")
        outputs[name] = path.read_bytes()
    return AgentResult(outputs=outputs, result={"exit_code": code, "stderr": stderr_tail[-1000:] or None})


# -- llm ---------------------------------------------------------------------------------------
def _check_llm(params: dict[str, Any], info: dict[str, Any]) -> None:
    _only(params, {"instruction", "cite"}, info)
    _text(params.get("instruction"), "instruction", info["where"])
    if "cite" in params and not isinstance(params["cite"], bool):
        fail("invalid_spec", f"'{info['where']}.params.cite' must be true or false.", field=info["where"])
    if len(info["outputs"]) > 1:
        fail("invalid_spec", f"'{info['where']}': the llm agent writes one output.", field=info["where"])


def _generate(ctx: StepContext, default_instruction: str) -> str:
    instruction = ctx.params.get("instruction") or default_instruction
    text = ctx.generate(instruction=instruction).strip()
    if not text:
        raise StepError("the language model produced no text for this instruction and these inputs")
    if ctx.params.get("cite", True) and ctx.inputs:
        text += "\n\nSources:\n" + "\n".join(f"[{n}] {i.label}" for n, i in enumerate(ctx.inputs, start=1))
    return text + "\n"


@registry.agent("llm", check=_check_llm, rate_limit="llm",
                description="An instruction (with {item} filled in) to the LLM provider, the inputs as its sources.")
def llm(ctx: StepContext) -> str:
    return _generate(ctx, "Summarise the sources.")


# -- python --------------------------------------------------------------------------------------
def _check_python(params: dict[str, Any], info: dict[str, Any]) -> None:
    name = params.get("function")
    if registry.get_function(name) is None:
        fail("unknown_function", f"{info['where']}: no function named {name!r} is registered for the python agent.",
             field=f"{info['where']}.params.function", known=registry.function_names())


@registry.agent("python", check=_check_python, description="Runs a registered Python function (params.function).")
def python(ctx: StepContext) -> Any:
    fn = registry.get_function(ctx.params["function"])
    if fn is None:
        raise StepError(f"the function {ctx.params['function']!r} is no longer registered", retry=False)
    return fn(ctx)


# -- sleep ---------------------------------------------------------------------------------------
def _check_sleep(params: dict[str, Any], info: dict[str, Any]) -> None:
    _only(params, {"seconds", "text", "fail_attempts"}, info)
    seconds = params.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 3600:
        fail("invalid_spec", f"'{info['where']}.params.seconds' must be a number from 0 to 3600.",
             field=f"{info['where']}.params.seconds")
    _text(params.get("text"), "text", info["where"])
    attempts = params.get("fail_attempts", [])
    if not isinstance(attempts, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in attempts):
        fail("invalid_spec", f"'{info['where']}.params.fail_attempts' must be a list of attempt numbers.",
             field=f"{info['where']}.params.fail_attempts")


@registry.agent("sleep", check=_check_sleep,
                description="Sleeps params.seconds (standing in for model latency), then writes its outputs.")
def sleep(ctx: StepContext) -> dict[str, str]:
    ctx.sleep(float(ctx.params.get("seconds", 1)))
    if ctx.attempt in ctx.params.get("fail_attempts", []):
        raise StepError(f"attempt {ctx.attempt} fails on purpose (params.fail_attempts)")
    text = ctx.params.get("text") or f"{ctx.key}: slept {ctx.params.get('seconds', 1)}s (attempt {ctx.attempt})"
    return {name: text + "\n" for name in ctx.output_names}


# -- copy ----------------------------------------------------------------------------------------
def _check_copy(params: dict[str, Any], info: dict[str, Any]) -> None:
    _only(params, set(), info)
    if info["inputs"] != len(info["outputs"]):
        fail("invalid_spec", f"'{info['where']}': copy takes as many inputs as it has outputs.", field=info["where"])


@registry.agent("copy", check=_check_copy, description="Writes its inputs, in order, as its outputs.")
def copy(ctx: StepContext) -> dict[str, bytes]:
    return {name: item.data for name, item in zip(ctx.output_names, ctx.inputs, strict=True)}


# -- aggregators ----------------------------------------------------------------------------------
def _one_output(params: dict[str, Any], info: dict[str, Any], allowed: set[str]) -> None:
    _only(params, allowed, info)
    if len(info["outputs"]) != 1:
        fail("invalid_spec", f"'{info['where']}': an aggregator writes exactly one output.", field=info["where"])


def _label(item: Input) -> str:
    text = item.text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("label"), str | int | float | bool):
        return str(value["label"])
    if isinstance(value, str):
        return value.strip()
    return text.splitlines()[0].strip() if text else ""


@registry.agent("vote", min_inputs=1, check=lambda p, i: _one_output(p, i, set()),
                description="Majority vote over the inputs' labels (weighted by branch weight); ties go to the "
                            "earliest branch.")
def vote(ctx: StepContext) -> AgentResult:
    tally: dict[str, float] = defaultdict(float)
    first_seen: dict[str, int] = {}
    ballots = []
    for index, item in enumerate(ctx.inputs):
        label = _label(item)
        if not label:
            continue
        tally[label] += item.weight
        first_seen.setdefault(label, index)
        ballots.append({"from": item.producer, "label": label, "weight": item.weight})
    if not tally:
        raise StepError("no input carried a label to vote on")
    winner = max(tally, key=lambda label: (tally[label], -first_seen[label]))
    total = sum(tally.values())
    body = {"label": winner, "votes": dict(tally), "agreement": round(tally[winner] / total, 4) if total else 0.0,
            "ballots": ballots}
    return AgentResult(outputs=json.dumps(body, indent=2) + "\n", result={"label": winner, "votes": dict(tally)})


def _scores(item: Input) -> dict[str, float]:
    value = item.json()
    if isinstance(value, dict) and isinstance(value.get("scores"), dict | list):
        value = value["scores"]
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for entry in value:
            if not isinstance(entry, dict):
                raise StepError(f"{item.name}: each recommendation is an object {{item, score}}", retry=False)
            name = entry.get("item", entry.get("name", entry.get("id")))
            pairs.append((name, entry.get("score")))
    else:
        raise StepError(f"{item.name}: recommendations are {{item: score}} or [{{item, score}}]", retry=False)
    scores = {}
    for name, score in pairs:
        if not isinstance(name, str | int) or isinstance(score, bool) or not isinstance(score, int | float):
            raise StepError(f"{item.name}: {name!r} has no numeric score", retry=False)
        scores[str(name)] = float(score)
    return scores


def _check_merge(params: dict[str, Any], info: dict[str, Any]) -> None:
    _one_output(params, info, {"top"})
    top = params.get("top")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 10000):
        fail("invalid_spec", f"'{info['where']}.params.top' must be a whole number from 1 to 10000.",
             field=info["where"])


@registry.agent("weighted_merge", min_inputs=1, check=_check_merge,
                description="Merges scored recommendations: each item's score is the weighted mean over the inputs.")
def weighted_merge(ctx: StepContext) -> AgentResult:
    totals: dict[str, float] = defaultdict(float)
    support: dict[str, int] = defaultdict(int)
    weight_sum = 0.0
    for item in ctx.inputs:
        weight_sum += item.weight
        for name, score in _scores(item).items():
            totals[name] += item.weight * score
            support[name] += 1
    if weight_sum <= 0:
        raise StepError("the inputs' weights add up to zero", retry=False)
    ranking = sorted(({"item": n, "score": round(s / weight_sum, 6), "support": support[n]} for n, s in totals.items()),
                     key=lambda r: (-r["score"], r["item"]))
    if ctx.params.get("top"):
        ranking = ranking[: ctx.params["top"]]
    return AgentResult(outputs=json.dumps({"ranking": ranking}, indent=2) + "\n",
                       result={"top": ranking[0]["item"] if ranking else None})


def _check_summary(params: dict[str, Any], info: dict[str, Any]) -> None:
    _one_output(params, info, {"instruction", "cite"})
    _text(params.get("instruction"), "instruction", info["where"])


@registry.agent("summary", min_inputs=1, check=_check_summary, rate_limit="llm",
                description="Summarises the inputs through the LLM provider (offline extractive by default).")
def summary(ctx: StepContext) -> str:
    return _generate(ctx, "Summarise what the sources say, and where they agree and disagree.")


def _check_concat(params: dict[str, Any], info: dict[str, Any]) -> None:
    _one_output(params, info, {"separator", "title"})
    for name in ("separator", "title"):
        if name in params and not isinstance(params[name], str):
            fail("invalid_spec", f"'{info['where']}.params.{name}' must be text.", field=info["where"])


@registry.agent("concat", min_inputs=1, check=_check_concat,
                description="Joins the inputs' text in order (params.separator, default a blank line).")
def concat(ctx: StepContext) -> str:
    separator = ctx.params.get("separator", "\n\n")
    body = separator.join(item.text.strip("\n") for item in ctx.inputs)
    title = ctx.params.get("title")
    return (f"# {title}\n\n" if title else "") + body + "\n"


# -- the judge of competitive steps ------------------------------------------------------------------
def _check_select(params: dict[str, Any], info: dict[str, Any]) -> None:
    if info.get("role") != "judge":
        fail("invalid_spec", f"'{info['where']}': 'select' is the judge of competitive steps; use compete.",
             field=info["where"])


@registry.agent("select", check=_check_select,
                description="The judge of a competitive step: keeps the winning attempt's output.")
def select(ctx: StepContext) -> AgentResult:
    done = {c["key"]: c for c in ctx.candidates if c["status"] == "done" and c.get("score") is not None}
    if not done:
        raise StepError("no attempt succeeded, so there is nothing to choose from", retry=False)
    winner = ctx.winner if ctx.winner in done else max(
        done, key=lambda k: (done[k]["score"], -done[k]["attempt"]))
    chosen = [i for i in ctx.inputs if i.producer == winner]
    if len(chosen) != len(ctx.output_names):
        raise StepError(f"the winning attempt {winner} left no output to keep")
    scores = {k: c.get("score") for k, c in ((c["key"], c) for c in ctx.candidates)}
    return AgentResult(outputs={name: item.data for name, item in zip(ctx.output_names, chosen, strict=True)},
                       result={"winner": winner, "score": done[winner]["score"], "scores": scores,
                               "first_good_wins": bool(ctx.winner)})


# -- scorers (higher is better) -------------------------------------------------------------------------
def _all_text(outputs: dict[str, bytes]) -> str:
    return "\n".join(v.decode("utf-8", errors="replace") for v in outputs.values())


@registry.scorer("length")
def score_length(outputs: dict[str, bytes], params: dict[str, Any]) -> float:
    """Words relative to params.target_words (default 200), capped at 1."""
    target = float(params.get("target_words", 200)) or 1.0
    return round(min(1.0, len(_all_text(outputs).split()) / target), 6)


@registry.scorer("keywords")
def score_keywords(outputs: dict[str, bytes], params: dict[str, Any]) -> float:
    """The share of params.keywords the outputs mention (case-insensitive)."""
    keywords = [str(k).lower() for k in params.get("keywords", [])]
    if not keywords:
        raise StepError("the keywords scorer needs params.keywords", retry=False)
    text = _all_text(outputs).lower()
    return round(sum(k in text for k in keywords) / len(keywords), 6)


@registry.scorer("json_field")
def score_json_field(outputs: dict[str, bytes], params: dict[str, Any]) -> float:
    """A number read from the first output's JSON (params.field, default "score")."""
    name = params.get("field", "score")
    first = next(iter(outputs.values()), b"")
    try:
        value = json.loads(first)[name]
    except (ValueError, KeyError, TypeError) as exc:
        raise StepError(f"the output has no JSON field {name!r}") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StepError(f"the JSON field {name!r} is not a number")
    return float(value)


# -- functions for the python agent ------------------------------------------------------------------
@registry.function("keyword_label")
def keyword_label(ctx: StepContext) -> str:
    """Classifies the input: the label (params.labels: {label: [keywords]}) whose keywords occur
    most often; params.default when none occurs."""
    labels = ctx.params.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise StepError("keyword_label needs params.labels: {label: [keywords]}", retry=False)
    text = ctx.input_text().lower()
    counts = {label: sum(text.count(str(k).lower()) for k in words) for label, words in labels.items()}
    best = max(counts, key=lambda label: counts[label])
    label = best if counts[best] > 0 else str(ctx.params.get("default", "unknown"))
    return json.dumps({"label": label, "counts": counts}) + "\n"


@registry.function("keyword_scores")
def keyword_scores(ctx: StepContext) -> str:
    """Scores candidates (params.items: {item: [keywords]}) by the share of their keywords the
    input mentions: a recommendation list for weighted_merge."""
    items = ctx.params.get("items")
    if not isinstance(items, dict) or not items:
        raise StepError("keyword_scores needs params.items: {item: [keywords]}", retry=False)
    text = ctx.input_text().lower()
    scores = {item: round(sum(str(k).lower() in text for k in words) / max(1, len(words)), 4)
              for item, words in items.items()}
    return json.dumps(scores) + "\n"


@registry.function("word_count")
def word_count(ctx: StepContext) -> str:
    """The number of words in each input, one line each."""
    started = time.monotonic()
    lines = [f"{item.name}\t{len(item.text.split())}" for item in ctx.inputs]
    ctx.log(f"counted {len(lines)} inputs in {time.monotonic() - started:.3f}s")
    return "\n".join(lines) + "\n"
