import NIOCore
import NIOEmbedded
import Testing

@testable import SluiceRedis

@Suite("Pipeline state machine")
struct RedisPipelineStateMachineTests {
    let loop = EmbeddedEventLoop()

    @Test func repliesGoToCommandsInOrder() throws {
        var machine = RedisPipelineStateMachine(acceptsPushes: false)
        let first = loop.makePromise(of: RESPValue.self)
        let second = loop.makePromise(of: RESPValue.self)
        guard case .write = machine.enqueue(first, deadline: .now() + .seconds(1)),
              case .write = machine.enqueue(second, deadline: .now() + .seconds(1)) else {
            Issue.record("enqueue refused"); return
        }
        guard case .succeed(let p1, .integer(1)) = machine.received(.integer(1)),
              case .fail(let p2, .server("ERR no")) = machine.received(.error("ERR no")) else {
            Issue.record("wrong reply routing"); return
        }
        #expect(p1.futureResult === first.futureResult)
        #expect(p2.futureResult === second.futureResult)
        first.succeed(.null); second.succeed(.null)
    }

    @Test func theQueueIsBounded() {
        var machine = RedisPipelineStateMachine(acceptsPushes: false, maxPending: 2)
        let promises = (0..<3).map { _ in loop.makePromise(of: RESPValue.self) }
        guard case .write = machine.enqueue(promises[0], deadline: .now() + .seconds(1)),
              case .write = machine.enqueue(promises[1], deadline: .now() + .seconds(1)),
              case .fail(_, .overloaded) = machine.enqueue(promises[2], deadline: .now() + .seconds(1)) else {
            Issue.record("the third command should be refused"); return
        }
        #expect(machine.pendingCount == 2)
        _ = machine.received(.integer(1))
        let again = loop.makePromise(of: RESPValue.self)
        guard case .write = machine.enqueue(again, deadline: .now() + .seconds(1)) else {
            Issue.record("room after a reply"); return
        }
        for promise in promises + [again] { promise.succeed(.null) }
    }

    @Test func unexpectedReplyClosesACommandConnection() {
        var machine = RedisPipelineStateMachine(acceptsPushes: false)
        guard case .closeConnection(.protocolError, let failing) = machine.received(.integer(1)) else {
            Issue.record("expected close"); return
        }
        #expect(failing.isEmpty)
    }

    @Test func pushesOnASubscriberConnectionBypassTheQueue() {
        var machine = RedisPipelineStateMachine(acceptsPushes: true)
        let ping = loop.makePromise(of: RESPValue.self)
        _ = machine.enqueue(ping, deadline: .now() + .seconds(1))
        let message = RESPValue.array([.bulkString(ByteBuffer(string: "message")),
                                       .bulkString(ByteBuffer(string: "ch")), .bulkString(ByteBuffer(string: "x"))])
        guard case .push = machine.received(message) else { Issue.record("message not pushed"); return }
        guard case .succeed = machine.received(.array([.bulkString(ByteBuffer(string: "pong")), .bulkString(ByteBuffer())])) else {
            Issue.record("pong not routed to PING"); return
        }
        ping.succeed(.null)
    }

    @Test func anExpiredHeadTimesOutEverything() {
        var machine = RedisPipelineStateMachine(acceptsPushes: false)
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let a = loop.makePromise(of: RESPValue.self)
        let b = loop.makePromise(of: RESPValue.self)
        _ = machine.enqueue(a, deadline: start + .milliseconds(100))
        _ = machine.enqueue(b, deadline: start + .milliseconds(200))
        guard case .arm(let deadline) = machine.timerFired(now: start + .milliseconds(50)) else {
            Issue.record("expected re-arm"); return
        }
        #expect(deadline == start + .milliseconds(100))
        guard case .closeConnection(.timeout, let failing) = machine.timerFired(now: start + .milliseconds(100)) else {
            Issue.record("expected timeout"); return
        }
        #expect(failing.count == 2)
        // Once closed, new commands are refused with the same reason.
        let late = loop.makePromise(of: RESPValue.self)
        guard case .fail(_, .timeout) = machine.enqueue(late, deadline: start + .seconds(1)) else {
            Issue.record("closed machine accepted a command"); return
        }
        for promise in [a, b, late] { promise.fail(RedisClientError.timeout) }
    }
}

@Suite("Connection slot state machine")
struct RedisConnectionSlotStateMachineTests {
    @Test func backoffDoublesUpToTheCapAndFailsFastMeanwhile() {
        var machine = RedisConnectionSlotStateMachine(backoff: (.milliseconds(10), .milliseconds(50)))
        let now = NIODeadline.uptimeNanoseconds(5_000_000_000)
        var delays: [TimeAmount] = []
        for _ in 0..<5 {
            machine.connectFailed(.connectFailed("refused"), now: now, jitter: 1)
            delays.append(machine.delay(jitter: 1))
        }
        #expect(delays == [.milliseconds(10), .milliseconds(20), .milliseconds(40), .milliseconds(50), .milliseconds(50)])
        guard case .fail(.connectFailed) = machine.acquire(now: now + .milliseconds(49)) else {
            Issue.record("expected fail-fast during backoff"); return
        }
        guard case .connect = machine.acquire(now: now + .milliseconds(50)) else {
            Issue.record("expected a new attempt after backoff"); return
        }
    }

    @Test func shutdownRefusesEverything() {
        var machine = RedisConnectionSlotStateMachine(backoff: (.milliseconds(10), .milliseconds(50)))
        #expect(machine.shutdown() == nil)
        guard case .fail(.shutdown) = machine.acquire(now: .now()) else { Issue.record("expected shutdown"); return }
    }
}

@Suite("Redis URLs")
struct RedisConfigurationTests {
    @Test func fullURL() throws {
        let config = try RedisConfiguration(url: "rediss://app:s%40cret@redis.internal:6380/3")
        #expect(config.host == "redis.internal")
        #expect(config.port == 6380)
        #expect(config.username == "app")
        #expect(config.password == "s@cret")
        #expect(config.database == 3)
        #expect(config.tls != nil)
    }

    @Test func passwordOnlyAndDefaults() throws {
        let config = try RedisConfiguration(url: "redis://:secret@localhost")
        #expect(config.username == nil)
        #expect(config.password == "secret")
        #expect(config.port == 6379 && config.database == 0 && config.tls == nil)
    }

    @Test(arguments: ["http://x:1", "redis://", "redis://h:1/abc", "redis://h:1/-1", "not a url", "redis://h:99999"])
    func badURLsAreRefused(_ url: String) {
        #expect(throws: RedisConfigurationError.self) { try RedisConfiguration(url: url) }
    }
}
