"""The URL forms of `--redis`, read without connecting; and what is refused, and how."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.asyncio import RedisCluster

from llmquota.store import QuotaStore, RedisUrlError, parse_redis_url
from llmquota.store.connection import PasswordFile, connect
from llmquota.store.replication import ReplicaWait


def test_a_sentinel_url_names_its_sentinels_service_and_database() -> None:
    location = parse_redis_url("redis+sentinel://app:s3cret@s1:26380,s2,[::1]:26381/mymaster/2")
    assert location.kind == "sentinel"
    assert location.nodes == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (location.service, location.db) == ("mymaster", 2)
    assert (location.username, location.password, location.tls) == ("app", "s3cret", False)


def test_a_sentinel_url_defaults_to_database_0_and_tls_with_rediss() -> None:
    location = parse_redis_url("rediss+sentinel://s1:26379/mymaster")
    assert (location.db, location.tls, location.password) == (0, True, None)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://s1:26379", "needs the service name"),
        ("redis+sentinel://s1:26379/", "needs the service name"),
        ("redis+sentinel://s1:port/mymaster", "is not HOST:PORT"),
        ("redis+sentinel://s1:26379,,s2/mymaster", "is not HOST:PORT"),
        ("redis+sentinel://s1:99999/mymaster", "is not HOST:PORT"),
        ("redis+sentinel://s1/mymaster/zero", "is not a number"),
        ("redis+sentinel://s1/mymaster?ssl=true", "takes no query string"),
        ("redis://:6379/0", "needs HOST[:PORT]"),
        ("redis://redis:port/0", "needs HOST[:PORT]"),
        ("memcached://cache:11211", "unknown URL scheme (memcached)"),
        ("redis-host:6379", "unknown URL scheme (no scheme)"),
    ],
)
def test_a_bad_url_is_refused_with_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(RedisUrlError, match=re.escape(complaint)):
        parse_redis_url(url)


def test_single_server_urls_pass_through_as_given() -> None:
    for url in ("redis://redis:6379/0", "rediss://u:p@redis.example:6380/1", "unix:///r.sock"):
        assert parse_redis_url(url).url == url


def test_no_message_repeats_the_password() -> None:
    with pytest.raises(RedisUrlError) as refused:
        parse_redis_url("redis+sentinel://app:hunter2@s1:bad/mymaster")
    assert "hunter2" not in str(refused.value)
    location = parse_redis_url("redis+sentinel://app:hunter2@s1/mymaster")
    assert location.password == "hunter2"
    assert "hunter2" not in repr(location)


def test_redis_cluster_gets_redis_pys_cluster_client_of_its_seed_nodes() -> None:
    location = parse_redis_url("redis+cluster://n1:7000,n2:7001")
    assert (location.kind, location.nodes) == ("cluster", (("n1", 7000), ("n2", 7001)))
    client = connect("redis+cluster://app:pw@n1:7000,n2:7001", socket_timeout=2, pool_timeout=5)
    assert isinstance(client, RedisCluster)  # lazily: nothing is connected yet
    assert [(node.host, node.port) for node in client.nodes_manager.startup_nodes.values()] == [
        ("n1", 7000),
        ("n2", 7001),
    ]


def test_a_cluster_has_no_database_but_0() -> None:
    with pytest.raises(RedisUrlError, match="only database 0"):
        connect("redis+cluster://n1:7000/2")


def test_a_password_in_the_url_and_in_a_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    with pytest.raises(RedisUrlError, match="keep one"):
        connect("redis://:in-url@redis:6379/0", password_file=secret)


def test_an_unreadable_or_empty_password_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(RedisUrlError, match="No such file"):
        connect("redis://redis:6379/0", password_file=tmp_path / "absent")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(RedisUrlError, match="is empty"):
        connect("redis://redis:6379/0", password_file=tmp_path / "empty")


def test_the_password_file_is_read_again_for_each_connection(tmp_path: Path) -> None:
    """A rotated Secret (kubelet swaps the file) is used from the next connection on."""
    secret = tmp_path / "password"
    secret.write_text("first\n")
    provider = PasswordFile(secret, "app")
    assert provider.get_credentials() == ("app", "first")
    secret.write_text("second")
    assert provider.get_credentials() == ("app", "second")
    assert PasswordFile(secret).get_credentials() == ("second",)


def test_waiting_for_replicas_needs_one_primary() -> None:
    """WAIT counts the replicas of one connection's writes; a Cluster routes the settle
    and the WAIT to different connections, so the combination is refused at start."""
    with pytest.raises(RedisUrlError, match="needs one primary"):
        QuotaStore.from_url("redis+cluster://n1:7000,n2:7001", replica_wait=ReplicaWait(1, 100))
