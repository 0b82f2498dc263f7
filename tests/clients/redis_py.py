"""redis-py against a ringkv node: run by tests/resp.rs with the interpreter
of the venv `just redis-py` makes (redis-py's current release).

    python redis_py.py PORT
"""

import sys

import redis


def check(port: int, protocol: int) -> None:
    r = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, decode_responses=True)
    assert r.ping() is True
    assert r.set("greeting", "hello", ex=100) is True
    assert r.get("greeting") == "hello"
    assert 99 <= r.ttl("greeting") <= 100
    assert r.get("missing") is None
    assert r.incr("visits") == 1
    assert r.incrby("visits", 41) == 42
    assert r.decr("visits") == 41
    assert r.incrbyfloat("price", 10.5) == 10.5
    assert r.set("greeting", "other", nx=True) is None
    assert r.set("greeting", "hi", xx=True, get=True) == "hello"
    assert r.setnx("fresh", "v") is True
    assert r.getset("fresh", "w") == "v"
    assert r.getdel("fresh") == "w"
    assert r.exists("fresh") == 0
    assert r.append("log", "ab") == 2
    assert r.setrange("log", 1, "xyz") == 4
    assert r.get("log") == "axyz"
    assert r.strlen("log") == 4
    assert r.getrange("log", 0, 1) == "ax"
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget(["a", "missing", "b"]) == ["1", None, "2"]
    assert r.expire("a", 50) is True
    assert r.persist("a") is True
    assert r.getex("b", px=60_000) == "2"
    assert 0 < r.pttl("b") <= 60_000
    assert r.type("a") == "string"
    assert r.delete("a", "b", "missing") == 2
    try:
        r.execute_command("LPUSH", "list", "x")
        raise AssertionError("LPUSH is not served")
    except redis.ResponseError as e:
        assert str(e).startswith("unknown command 'LPUSH'"), e
    try:
        r.incr("greeting")
        raise AssertionError("INCR of text")
    except redis.ResponseError as e:
        assert str(e) == "value is not an integer or out of range", e
    pipe = r.pipeline(transaction=False)
    for _ in range(100):
        pipe.incr("piped")
    assert pipe.execute() == list(range(1, 101))
    info = r.info()
    assert info["redis_version"] == "7.2.0" and info["connected_clients"] >= 1, info
    assert r.info("memory")["maxmemory_policy"] == "noeviction"
    assert r.flushall() is True
    assert r.get("greeting") is None
    r.close()


def check_cluster(port: int, protocol: int) -> None:
    """RedisCluster: the node answers CLUSTER as one shard holding every
    slot, so the cluster client sends everything to it."""
    from redis.cluster import RedisCluster

    rc = RedisCluster(host="127.0.0.1", port=port, protocol=protocol, decode_responses=True)
    assert rc.set("{user1}.name", "ada") is True
    assert rc.get("{user1}.name") == "ada"
    assert rc.incr("cluster-counter") == 1
    rc.mset_nonatomic({"x": "1", "y": "2"})
    assert rc.mget_nonatomic(["x", "y", "z"]) == ["1", "2", None]
    assert rc.keyslot("foo") == 12182
    assert rc.delete("x") == 1
    rc.close()


def main() -> None:
    port = int(sys.argv[1])
    for protocol in (3, 2):
        check(port, protocol)
        check_cluster(port, protocol)
    print(f"redis-py {redis.__version__}: ok with RESP3 and RESP2, Redis and RedisCluster")


if __name__ == "__main__":
    main()
