"""Remember, search, get, forget through the real client against a real daemon."""

from __future__ import annotations

import pytest
from harness import Daemon
from reverie.errors import InvalidParams, NotFound


def test_remember_search_get_forget(daemon: Daemon) -> None:
    with daemon.client() as c:
        r = c.remember("The deploy script lives in tools/deploy.sh", kind="fact", tags=["deploy"])
        assert r.created and r.id >= 1
        c.remember("We prefer pytest over unittest", kind="preference")
        hits = c.search("where is the deploy script").hits
        assert hits[0].memory.id == r.id
        m = c.get(r.id)
        assert m.content == "The deploy script lives in tools/deploy.sh"
        assert (m.kind, m.tags, m.state, m.tier) == ("fact", ["deploy"], "active", "short")
        c.forget(r.id, reason="obsolete")
        assert r.id not in [h.memory.id for h in c.search("deploy script").hits]
        gone = c.get(r.id)
        assert gone.state == "forgotten" and gone.metadata["forgotten"]["reason"] == "obsolete"


def test_remember_is_idempotent_on_content(daemon: Daemon) -> None:
    with daemon.client() as c:
        a = c.remember("same   text", workspace="w1")
        b = c.remember("same text", workspace="w1")
        other = c.remember("same text", workspace="w2")
        assert (a.id, a.created) == (b.id, True) and not b.created
        assert other.created and other.id != a.id


def test_search_filters_by_workspace(daemon: Daemon) -> None:
    with daemon.client() as c:
        a = c.remember("alpha uses postgres", workspace="a")
        b = c.remember("beta uses postgres", workspace="b")
        assert {h.memory.id for h in c.search("postgres").hits} == {a.id, b.id}
        assert {h.memory.workspace for h in c.search("postgres", workspace="b").hits} == {"b"}


def test_query_syntax_is_not_interpreted(daemon: Daemon) -> None:
    with daemon.client() as c:
        c.remember('a "quoted" NEAR(thing) AND * stuff')
        for q in ['"', "AND", "NEAR(", "*", "a OR", "(((", "col:val"]:
            c.search(q)  # never an FTS5 syntax error
        assert c.search("   ").hits == []


def test_forget_purge_erases_text(daemon: Daemon) -> None:
    with daemon.client() as c:
        r = c.remember("secret plan")
        assert c.forget(r.id, purge=True).purged
        assert c.get(r.id).content == ""


def test_errors_are_typed(daemon: Daemon) -> None:
    with daemon.client() as c:
        with pytest.raises(NotFound):
            c.get(424242)
        with pytest.raises(NotFound):
            c.forget(424242)
        with pytest.raises(InvalidParams):
            c.remember("")
        with pytest.raises(InvalidParams):
            c.remember("x", importance=2.0)
        with pytest.raises(InvalidParams):
            c.remember("x", kind="Not A Kind")
        c.ping()  # the connection survives every error
