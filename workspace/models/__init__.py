"""The workspace domain. One module a concept; everything is re-exported here."""
from workspace.models.core import (  # noqa: F401
    DirectoryRule,
    Event,
    File,
    FileVersion,
    IdempotencyRecord,
    Membership,
    Role,
    Workspace,
)
from workspace.models.locks import *  # noqa: F401,F403
from workspace.models.messages import *  # noqa: F401,F403
from workspace.models.tasks import *  # noqa: F401,F403
