"""redis-py against a ringkv node: run by tests/resp.rs with the interpreter
of the venv `just redis-py` makes (redis-py's current release).

    python redis_py.py PORT
    python redis_py.py cluster PORT...
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
    assert r.mset({"s1": "1", "s2": "2", "s3": "3"}) is True
    assert r.msetnx({"s3": "x", "s4": "4"}) is False
    assert r.exists("s4") == 0 and r.get("s3") == "3"
    assert r.msetnx({"s4": "4", "s5": "5"}) is True
    assert sorted(r.keys("s*")) == ["s1", "s2", "s3", "s4", "s5"]
    assert sorted(r.scan_iter(match="s*", count=2)) == ["s1", "s2", "s3", "s4", "s5"]
    everything = set(r.keys("*"))
    assert r.dbsize() == len(everything) and r.randomkey() in everything
    assert r.rename("s1", "t1") is True
    assert r.get("t1") == "1" and r.exists("s1") == 0
    assert r.renamenx("s2", "t1") is False
    assert r.copy("s2", "t2") is True and r.copy("s2", "t2") is False
    assert r.copy("s3", "t2", replace=True) is True and r.get("t2") == "3"
    info = r.info()
    assert info["redis_version"] == "7.2.0" and info["connected_clients"] >= 1, info
    assert r.info("memory")["maxmemory_policy"] == "noeviction"
    assert r.flushall() is True
    assert r.get("greeting") is None
    assert r.dbsize() == 0 and r.randomkey() is None
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


def check_real_cluster(ports: list[int]) -> None:
    """RedisCluster started from each node of a real ringkv cluster: every
    node answers as the shard holding every slot, and what a client of one
    node writes, the clients of the others read."""
    from redis.cluster import ClusterNode, RedisCluster

    clients = [RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p)], decode_responses=True) for p in ports]
    for i, rc in enumerate(clients):
        assert rc.set(f"written-by-{i}", str(i)) is True
    for rc in clients:
        for i in range(len(clients)):
            assert rc.get(f"written-by-{i}") == str(i)
    written = {f"written-by-{i}" for i in range(len(clients))}
    for rc in clients:
        assert set(rc.scan_iter(match="written-by-*", count=2)) == written
    counts = [rc.incr("shared-counter") for _ in range(10) for rc in clients]
    assert sorted(counts) == list(range(1, 10 * len(clients) + 1)), counts
    for rc in clients:
        rc.close()


def main() -> None:
    if sys.argv[1] == "cluster":
        ports = [int(p) for p in sys.argv[2:]]
        check_real_cluster(ports)
        print(f"redis-py {redis.__version__}: ok with RedisCluster through {len(ports)} nodes")
        return
    port = int(sys.argv[1])
    for protocol in (3, 2):
        check(port, protocol)
        check_cluster(port, protocol)
    print(f"redis-py {redis.__version__}: ok with RESP3 and RESP2, Redis and RedisCluster")


if __name__ == "__main__":
    main()
