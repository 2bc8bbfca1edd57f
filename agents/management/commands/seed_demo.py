"""`manage.py seed_demo`: on an empty database, a demo workspace with a living pipeline.

`make run` calls it on every start (unless --no-seed); it does nothing once any workspace exists.
The demo: notes on three topics (agents/demo/notes/), and the offline content pipeline of
agents/demo/content_pipeline.yaml submitted by an agent account, `demo-pipeline`, acting for the
operator: research each topic -> write a section -> review it, then merge the sections into an
article that waits for the operator's approval before it is published to output/article.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from agents.models import User
from agents.pipelines.services import pipeline_submit
from agents.services import agent_create, random_password, user_create
from workspace.access import workspace_for
from workspace.models import Role, Workspace
from workspace.services.files import file_write
from workspace.services.workspaces import member_set, workspace_create

DEMO = Path(__file__).resolve().parent.parent.parent / "demo"
AGENT_NAME = "demo-pipeline"
README = """# Demo: a content pipeline

This workspace was seeded by `manage.py seed_demo` so that there is something alive to look at.

- `notes/` holds research notes on three topics.
- `specs/content-pipeline.yaml` is the pipeline the `demo-pipeline` agent submitted: for each topic
  it researches the notes (the LLM provider: offline extractive unless one is configured), writes a
  section and reviews it, topic after topic, so that one topic is being written while the next is
  researched. Then it merges the sections into one article.
- The merged article waits for an admin's approval (see Approvals). Approve it and the last step
  publishes it to `output/article.md`; reject it with a comment and the merge runs again.

Every step is a task on the board, every change is in the activity feed, and each step's work is
in the worklog. `GET /api/v1/workspaces/<id>/pipelines` shows the run, its waves, critical path
and speed-up.
"""


class Command(BaseCommand):
    help = "Seed a demo workspace with a running content pipeline, only if there are no workspaces yet."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-intelligence", dest="intelligence", action="store_false",
                            help="Do not index the demo workspace for search.")

    def handle(self, *args: Any, **options: Any) -> None:
        if Workspace.objects.exists():
            self.stdout.write("seed_demo: there are workspaces already; nothing to do.")
            return
        with transaction.atomic():
            if Workspace.objects.select_for_update().exists():
                return
            owner = User.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
            if owner is None:
                owner = User.objects.filter(username="demo").first() or user_create(
                    username="demo", email="demo@localhost", password=random_password())
            ws = workspace_create(user=owner, name="Demo: a content pipeline", intelligence=options["intelligence"])
            access = workspace_for(owner, ws.id, need=Role.OWNER)
            agent = User.objects.filter(username=AGENT_NAME, kind=User.Kind.AGENT).first()
            if agent is None:
                # The name is taken by a human account: the demo's agent takes another one.
                name = AGENT_NAME if not User.objects.filter(username=AGENT_NAME).exists() else \
                    f"{AGENT_NAME}-{random_password()[:6].lower()}"
                agent = agent_create(name=name, created_by=owner).token.user
            member_set(access=access, username=agent.username, role=Role.EDITOR)
            file_write(access=access, path="README.md", content=README.encode("utf-8"))
            for note in sorted((DEMO / "notes").glob("*.md")):
                file_write(access=access, path=f"notes/{note.name}", content=note.read_bytes())
            spec = (DEMO / "content_pipeline.yaml").read_text(encoding="utf-8")
            file_write(access=access, path="specs/content-pipeline.yaml", content=spec.encode("utf-8"))
            run = pipeline_submit(access=workspace_for(agent, ws.id, need=Role.EDITOR), spec=spec)
        self.stdout.write(f"seed_demo: workspace {ws.id} ({ws.name}) with pipeline run {run.id}, owned by "
                          f"{owner.username}")
