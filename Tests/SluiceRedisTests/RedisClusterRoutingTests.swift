import NIOCore
import Testing

@testable import SluiceRedis

/// The cluster client's pure parts: slots, the slot map, redirections, URLs, routing keys.
@Suite("Redis Cluster routing (no I/O)")
struct RedisClusterRoutingTests {
    @Test func slotsMatchRedisForPlainAndTaggedKeys() {
        // Values from `CLUSTER KEYSLOT` (the Redis Cluster specification's examples).
        #expect(RedisHashSlot.of("somekey") == 11_058)
        #expect(RedisHashSlot.of("foo{hash_tag}") == 2_515)
        #expect(RedisHashSlot.of("bar{hash_tag}") == 2_515)
        #expect(RedisHashSlot.of("123456789") == 12_739)  // CRC16/XMODEM check value 0x31C3
        #expect(RedisHashSlot.of("{}abc") == RedisHashSlot.of("{}abc"), "an empty tag hashes the whole key")
        #expect(RedisHashSlot.of("{}abc") != RedisHashSlot.of("abc"))
        #expect(RedisHashSlot.of("a{b}{c}") == RedisHashSlot.of("b"), "the first tag counts")
        #expect(RedisHashSlot.of("a{b") == RedisHashSlot.of("a{b"), "an unclosed brace is part of the key")
        #expect(RedisHashSlot.of("") == 0)
    }

    @Test func theSlotMapComesFromClusterSlotsAndMovedPatchesIt() throws {
        func node(_ host: String, _ port: Int) -> RESPValue {
            .array([.bulkString(.init(string: host)), .integer(Int64(port)), .bulkString(.init(string: "id"))])
        }
        let reply = RESPValue.array([
            .array([.integer(0), .integer(5460), node("10.0.0.1", 7000), node("10.0.0.4", 7003)]),
            .array([.integer(5461), .integer(10922), node("", 7001)]),
            .array([.integer(10923), .integer(16383), node("10.0.0.3", 7002)]),
        ])
        var map = try RedisClusterSlotMap(clusterSlots: reply, asked: RedisNodeAddress(host: "10.0.0.9", port: 7001))
        #expect(map.isComplete)
        #expect(map.master(for: 0) == RedisNodeAddress(host: "10.0.0.1", port: 7000))
        #expect(map.master(for: 5461) == RedisNodeAddress(host: "10.0.0.9", port: 7001), "an empty host is the node asked")
        #expect(map.master(for: 16383) == RedisNodeAddress(host: "10.0.0.3", port: 7002))
        #expect(map.masters.count == 3)
        map.assign(42...42, to: RedisNodeAddress(host: "10.0.0.3", port: 7002))
        #expect(map.master(for: 42) == RedisNodeAddress(host: "10.0.0.3", port: 7002))
        #expect(map.master(for: 43) == RedisNodeAddress(host: "10.0.0.1", port: 7000))

        let partial = try RedisClusterSlotMap(clusterSlots: .array([.array([.integer(0), .integer(10), node("h", 1)])]),
                                              asked: RedisNodeAddress(host: "h", port: 1))
        #expect(!partial.isComplete && partial.master(for: 11) == nil)
        #expect(throws: RedisClientError.self) {
            try RedisClusterSlotMap(clusterSlots: .array([.array([.integer(9), .integer(99_999), node("h", 1)])]),
                                    asked: RedisNodeAddress(host: "h", port: 1))
        }
    }

    @Test func redirectionsAreParsedFromErrorReplies() {
        #expect(RedisClusterRedirect(.server("MOVED 3999 127.0.0.1:6381"))
                == .moved(slot: 3999, to: RedisNodeAddress(host: "127.0.0.1", port: 6381)))
        #expect(RedisClusterRedirect(.server("ASK 12 [::1]:7000")) == .ask(slot: 12, to: RedisNodeAddress(host: "::1", port: 7000)))
        #expect(RedisClusterRedirect(.server("TRYAGAIN Multiple keys request during rehashing of slot")) == .tryAgain)
        #expect(RedisClusterRedirect(.server("CLUSTERDOWN The cluster is down")) == .clusterDown)
        #expect(RedisClusterRedirect(.server("MOVED 99999 h:1")) == nil, "a slot out of range is no redirection")
        #expect(RedisClusterRedirect(.server("ERR unknown")) == nil)
        #expect(RedisClusterRedirect(.timeout) == nil)
    }

    @Test func clusterAndSentinelURLs() throws {
        let cluster = try RedisConfiguration(url: "redis+cluster://app:pw@10.0.0.1:7000,10.0.0.2,[::1]:7002")
        #expect(cluster.topology == .cluster(seeds: [RedisNodeAddress(host: "10.0.0.1", port: 7000),
                                                     RedisNodeAddress(host: "10.0.0.2", port: 6379),
                                                     RedisNodeAddress(host: "::1", port: 7002)]))
        #expect(cluster.username == "app" && cluster.password == "pw" && cluster.tls == nil)
        let sentinel = try RedisConfiguration(url: "rediss+sentinel://:secret@s1:26379,s2/mymaster/3")
        #expect(sentinel.topology == .sentinel(sentinels: [RedisNodeAddress(host: "s1", port: 26379),
                                                           RedisNodeAddress(host: "s2", port: 26379)], masterName: "mymaster"))
        #expect(sentinel.password == "secret" && sentinel.username == nil && sentinel.database == 3 && sentinel.tls != nil)
        for bad in ["redis+cluster://", "redis+cluster://h:1/2", "redis+sentinel://s1:1", "redis+mesh://h:1",
                    "http+cluster://h:1", "redis+cluster://h:99999", "redis+sentinel://s:1/m/x"] {
            #expect(throws: RedisConfigurationError.self, "\(bad)") { try RedisConfiguration(url: bad) }
        }
        #expect(try RedisConfiguration(url: "redis://h:1/0").topology == .standalone)
    }

    @Test func commandsRouteByTheirFirstKey() {
        #expect(RedisCommand("GET", "a").routingKey == "a")
        #expect(RedisCommand("EVALSHA", ["sha", 2, "k1", "k2", "arg"] as [any RESPArgument]).routingKey == "k1")
        #expect(RedisCommand("EVALSHA", ["sha", 0, "arg"] as [any RESPArgument]).routingKey == nil)
        #expect(RedisCommand("XREADGROUP", ["GROUP", "g", "c", "COUNT", 5, "STREAMS", "s1", "s2", ">", ">"] as [any RESPArgument])
                    .routingKey == "s1")
        #expect(RedisCommand("XGROUP", "CREATE", "stream", "group", "0").routingKey == "stream")
        #expect(RedisCommand("XINFO", "GROUPS", "stream").routingKey == "stream")
        #expect(RedisCommand("PUBLISH", "channel", "m").routingKey == nil)
        #expect(RedisCommand("SCRIPT", "LOAD", "return 1").routingKey == nil)
        #expect(RedisCommand("SCAN", ["0"], routingKey: "{t}").routingKey == "{t}")
    }
}
