import NIOCore
import NIOPosix
import NIOSSL
import SluiceTestSupport
import Testing

@testable import SluiceRedis

/// Against the development stack's redis-server (scripts/stack-up.sh).
@Suite("Redis client against a real redis-server")
struct RedisClientTests {
    let client: RedisClient
    let prefix: String

    init() throws {
        client = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
        prefix = TestEnvironment.uniquePrefix("client")
    }

    @Test func tenThousandPipelinedCommandsFrom64TasksAnswerInOrder() async throws {
        let tasks = 64
        let perTask = 157  // 64 × 157 = 10,048 commands
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<tasks {
                group.addTask { [client, prefix] in
                    let key = "\(prefix)counter:\(task)"
                    for expected in 1...perTask {
                        // Each caller sees its own counter climb 1, 2, 3…: replies stay in its order.
                        let reply = try await client.send("INCR", key)
                        #expect(reply == .integer(Int64(expected)))
                    }
                    _ = try await client.send("EXPIRE", key, 60)
                }
            }
            try await group.waitForAll()
        }
    }

    /// TCP_NODELAY is a TCP-level option: set at the socket level, its number (1) is SO_DEBUG,
    /// which leaves Nagle on and fails with EACCES wherever CAP_NET_ADMIN is missing (a container).
    @Test func connectionsDisableNagle() async throws {
        let configuration = try RedisConfiguration.patient(url: TestEnvironment.redisURL)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let connection = try await RedisConnection.connect(configuration, sslContext: nil, on: loop)
        let noDelay = try await connection.channel.getOption(ChannelOptions.tcpOption(.tcp_nodelay)).get()
        #expect(noDelay != 0)
        let debug = try await connection.channel.getOption(ChannelOptions.socketOption(.init(rawValue: 1))).get()  // SO_DEBUG
        #expect(debug == 0)
        try await connection.channel.close()
    }

    @Test func binaryAndLargeValuesRoundTripExactly() async throws {
        let withNul = ByteBuffer(bytes: [0, 0x0D, 0x0A, 0, 0xFF, 0x24, 0x2A, 0])
        _ = try await client.send("SET", "\(prefix)nul", withNul, "EX", 60)
        #expect(try await client.send("GET", "\(prefix)nul") == .bulkString(withNul))

        var large = ByteBuffer()
        for index in 0..<(1 << 20) { large.writeInteger(UInt8(truncatingIfNeeded: index &* 31 &+ 7)) }
        _ = try await client.send("SET", "\(prefix)large", large, "EX", 60)
        #expect(try await client.send("GET", "\(prefix)large") == .bulkString(large))
        #expect(try await client.send("STRLEN", "\(prefix)large") == .integer(1 << 20))
    }

    @Test func serverErrorsAreTypedAndLeaveTheConnectionUsable() async throws {
        _ = try await client.send("SET", "\(prefix)text", "x", "EX", 60)
        await #expect(throws: RedisClientError.self) {
            _ = try await client.send("LPUSH", "\(prefix)text", "y")
        }
        do {
            _ = try await client.send("LPUSH", "\(prefix)text", "y")
        } catch {
            #expect(error.serverErrorCode == "WRONGTYPE")
        }
        #expect(try await client.send("GET", "\(prefix)text") == .bulkString(ByteBuffer(string: "x")))
    }

    @Test func nullsAndNestedArrays() async throws {
        #expect(try await client.send("GET", "\(prefix)missing") == .null)
        let reply = try await client.send("EVAL", "return {1, {'a', false}, 'b'}", 0)
        #expect(reply == .array([.integer(1), .array([.bulkString(ByteBuffer(string: "a")), .null]), .bulkString(ByteBuffer(string: "b"))]))
    }

    @Test func scriptsRunByHashAndAreReloadedAfterScriptFlush() async throws {
        // A private server: SCRIPT FLUSH must not disturb other tests.
        let server = try await RedisServerProcess()
        defer { server.stop() }
        let client = try RedisClient(configuration: RedisConfiguration.patient(url: server.url))
        let script = RedisScript(name: "double", source: "return tonumber(ARGV[1]) * 2 + #KEYS")
        try await client.load([script])
        #expect(try await client.evalScript(script, keys: ["k"], arguments: [20]) == .integer(41))
        _ = try await client.send("SCRIPT", "FLUSH")
        #expect(try await client.evalScript(script, keys: ["k"], arguments: [50]) == .integer(101))
        // And without any SCRIPT LOAD at all.
        let fresh = RedisScript(name: "fresh", source: "return 'hi'")
        #expect(try await client.evalScript(fresh, keys: [], arguments: []).string == "hi")
        client.shutdown()
    }

    @Test func authenticationAndDatabaseSelection() async throws {
        let server = try await RedisServerProcess(arguments: [
            "--requirepass", "topsecret", "--user", "app", "on", ">apppass", "~*", "+@all",
        ])
        defer { server.stop() }

        let legacy = try RedisClient(configuration: RedisConfiguration.patient(url: "redis://:topsecret@127.0.0.1:\(server.port)/2"))
        _ = try await legacy.send("SET", "where", "db2")
        let acl = try RedisClient(configuration: RedisConfiguration.patient(url: "redis://app:apppass@127.0.0.1:\(server.port)/2"))
        #expect(try await acl.send("GET", "where").string == "db2")
        #expect(try await acl.send("ACL", "WHOAMI").string == "app")

        let wrong = try RedisClient(configuration: RedisConfiguration.patient(url: "redis://:nope@127.0.0.1:\(server.port)"))
        await #expect(throws: RedisClientError.self) { _ = try await wrong.send("PING") }
        let anonymous = try RedisClient(configuration: RedisConfiguration.patient(url: server.url))
        do {
            _ = try await anonymous.send("GET", "where")
            Issue.record("unauthenticated command succeeded")
        } catch {
            #expect(error.serverErrorCode == "NOAUTH")
        }
        for client in [legacy, acl, wrong, anonymous] { client.shutdown() }
    }

    @Test func tlsWithAPrivateCertificateAuthority() async throws {
        let server = try await RedisServerProcess(arguments: ["--requirepass", "pw"], tls: true)
        defer { server.stop() }
        var configuration = try RedisConfiguration.patient(url: "rediss://:pw@127.0.0.1:\(server.port)/1")
        configuration.tls?.trustRoots = .file(server.certificatePath)
        let client = try RedisClient(configuration: configuration)
        _ = try await client.send("SET", "tls", ByteBuffer(bytes: [0, 1, 2]))
        #expect(try await client.send("GET", "tls") == .bulkString(ByteBuffer(bytes: [0, 1, 2])))
        client.shutdown()

        // The system trust store does not know this certificate: the handshake must fail.
        let untrusting = try RedisClient(configuration: RedisConfiguration.patient(url: "rediss://:pw@127.0.0.1:\(server.port)"))
        await #expect(throws: RedisClientError.self) { _ = try await untrusting.send("PING") }
        untrusting.shutdown()
    }

    @Test func connectionRefusedIsATypedErrorAndBacksOff() async throws {
        let port = try await RedisServerProcess.freePort()
        let client = try RedisClient(configuration: RedisConfiguration.patient(port: port))
        for _ in 0..<3 {
            do {
                _ = try await client.send("PING")
                Issue.record("PING to a closed port succeeded")
            } catch {
                guard case .connectFailed = error else { Issue.record("unexpected \(error)"); continue }
            }
        }
        client.shutdown()
    }
}
