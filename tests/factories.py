"""factory-boy factories for the models tests create directly."""
from __future__ import annotations

import factory

from agents.models import User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    kind = User.Kind.HUMAN
    password = factory.django.Password("a long test password")


class AgentFactory(UserFactory):
    username = factory.Sequence(lambda n: f"agent{n}")
    kind = User.Kind.AGENT
