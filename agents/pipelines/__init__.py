"""The pipeline engine: spec -> plan -> tasks -> RQ jobs. The spec format is documented in
agents/pipelines/spec.py and docs/pipelines.md; the modules, in the order a run meets them:

- spec.py: parse, check and expand a spec (patterns included) into plain steps;
- services.py: submit a run (tasks with dependencies), react to task events, sweep, finish;
- dispatch.py: one RQ job per ready step, and which jobs are still alive;
- runner.py: what a job does (claim, lock, supervise the agent, write outputs, complete);
- context.py, builtins.py, validation.py, competition.py, metrics.py: what the runner uses.
"""
