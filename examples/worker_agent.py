"""A complete Switchyard worker agent: claim a task, lock its output, write it, log it, complete it.

    SWITCHYARD_URL=http://localhost:8000 SWITCHYARD_TOKEN=... SWITCHYARD_WS=<workspace id> \
        python examples/worker_agent.py

Each task's payload names an input file; the output goes to `output/<name>.summary`. The worker
exits after `idle` seconds without work, so a supervisor can scale workers down.
"""
from __future__ import annotations

import os

from switchyard.client import Client


def summarise(text: str) -> str:
    """The agent's own work; here, a word count."""
    return f"{len(text.split())} words\n"


def main(idle: float = 30) -> None:
    ws = Client(os.environ["SWITCHYARD_URL"], os.environ["SWITCHYARD_TOKEN"]).workspace(os.environ["SWITCHYARD_WS"])
    while task := ws.tasks.claim(os.environ.get("SWITCHYARD_QUEUE", "default"), wait=idle):
        source = task.payload["input"]
        out = f"output/{source.rsplit('/', 1)[-1]}.summary"
        try:
            text = ws.read(source, task_id=task.id).text  # recorded: complete() refuses if it changes meanwhile
            with ws.lock(out, ttl=60, reason=f"task {task.id}") as lock:
                written = ws.write(out, summarise(text), lock_token=lock.token, task_id=task.id)
            ws.worklog.append(f"wrote {out} v{written.version}", task=task.id, data={"source": source})
            ws.tasks.complete(task.id, result={"version": written.version}, outputs=[out])
        except Exception as exc:  # any failure goes back to the queue, with the reason, for another attempt
            ws.tasks.fail(task.id, f"{type(exc).__name__}: {exc}", retry=True)


if __name__ == "__main__":
    main()
