import NIOCore
import ServiceLifecycle
import SluiceTestSupport
import Synchronization
import Testing

@testable import SluiceRedis

/// Each test runs its own redis-server, which it kills, pauses or restarts.
@Suite("Redis client when Redis misbehaves")
struct RedisResilienceTests {
    private func client(for server: RedisServerProcess, timeout: TimeAmount = .milliseconds(300),
                        maxPending: Int = 10_000, poolSize: Int = 2) throws -> RedisClient {
        var configuration = try RedisConfiguration(url: server.url)
        configuration.commandTimeout = timeout
        configuration.maxPendingCommands = maxPending
        configuration.poolSize = poolSize
        configuration.connectTimeout = timeout
        configuration.reconnectBackoff = (.milliseconds(5), .milliseconds(100))
        return try RedisClient(configuration: configuration)
    }

    /// Retries until a call succeeds; the bound turns a client that never recovers into a failure.
    private func eventuallySucceeds(_ client: RedisClient, within attempts: Int = 500) async throws {
        for _ in 0..<attempts {
            if (try? await client.send("PING")) == .simpleString("PONG") { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("client did not reconnect")
    }

    /// `count` GETs at once; each one's error (nil when it succeeded).
    private func concurrentGets(_ client: RedisClient, count: Int) async -> [RedisClientError?] {
        await withTaskGroup(of: RedisClientError?.self) { group in
            for index in 0..<count {
                group.addTask {
                    do {
                        _ = try await client.send("GET", "k\(index)")
                        return nil
                    } catch let error as RedisClientError {
                        return error
                    } catch {
                        return .protocolError("untyped \(error)")
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
    }

    @Test func restartUnderLoadGivesTypedErrorsThenRecovers() async throws {
        let server = try await RedisServerProcess()
        defer { server.stop() }
        let client = try client(for: server)
        let progress = LoadProgress()

        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<16 {
                group.addTask {
                    // Keep going until the restart is done and this worker has succeeded again.
                    var succeededAfterRestart = false
                    let deadline = ContinuousClock.now + .seconds(30)
                    while !succeededAfterRestart && ContinuousClock.now < deadline {
                        do {
                            let reply = try await client.send("INCR", "load:\(worker)")
                            #expect(reply.int != nil)
                            progress.successes.add(1, ordering: .relaxed)
                            if progress.restarted.load(ordering: .acquiring) { succeededAfterRestart = true }
                        } catch let error as RedisClientError {
                            // Only the typed transport errors are acceptable here.
                            switch error {
                            case .connectionClosed, .connectFailed, .timeout: break
                            default: Issue.record("unexpected error \(error)")
                            }
                            progress.failures.add(1, ordering: .relaxed)
                            try await Task.sleep(for: .milliseconds(2))
                        }
                    }
                    #expect(succeededAfterRestart)
                }
            }
            group.addTask {
                // Sleeps, never spins: a spinning task holds one of the two cooperative threads
                // of a 2-core machine, and every other test's timeouts start to fire.
                let deadline = ContinuousClock.now + .seconds(20)
                while progress.successes.load(ordering: .relaxed) < 500, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(5))
                }
                try await server.restart()
                progress.restarted.store(true, ordering: .releasing)
            }
            try await group.waitForAll()
        }
        // Whether the restart broke calls in flight depends on timing (on a loaded machine every
        // worker can be between calls): what must hold is above, typed errors only and recovery.
        client.shutdown()
    }

    @Test func pausedRedisMakesCallsTimeOutInsteadOfHanging() async throws {
        let server = try await RedisServerProcess()
        defer { server.stop() }
        let client = try client(for: server, timeout: .milliseconds(200))
        try await eventuallySucceeds(client)
        server.pause()
        let clock = ContinuousClock()
        let started = clock.now
        for error in await concurrentGets(client, count: 8) {
            #expect(error == .timeout)
        }
        // A hang guard, not a timing target: 200 ms timeouts must not take seconds.
        #expect(clock.now - started < .seconds(5))
        server.resume()
        try await eventuallySucceeds(client)
        client.shutdown()
    }

    /// A stuck Redis must not make the client queue without bound: past the cap a call fails at
    /// once (`.overloaded`), the ones already queued time out as usual.
    @Test func aStuckRedisFillsABoundedQueueAndRefusesTheRest() async throws {
        let server = try await RedisServerProcess()
        defer { server.stop() }
        let client = try client(for: server, timeout: .seconds(2), maxPending: 5, poolSize: 1)
        try await eventuallySucceeds(client)
        server.pause()
        let outcomes = await concurrentGets(client, count: 40)
        #expect(outcomes.filter { $0 == .overloaded }.count == 35, "\(outcomes)")
        #expect(outcomes.filter { $0 == .timeout }.count == 5)
        server.resume()
        try await eventuallySucceeds(client)
        client.shutdown()
    }

    @Test func subscriberReceivesMessagesAfterARedisRestart() async throws {
        let server = try await RedisServerProcess()
        defer { server.stop() }
        let client = try client(for: server, timeout: .seconds(5))  // not a timing test: patient under load
        let subscriber = RedisSubscriber(client: client, channels: ["sluice:test"], healthCheckInterval: .milliseconds(200))
        let running = Task { try await subscriber.run() }
        defer { running.cancel() }
        var events = subscriber.events.makeAsyncIterator()

        #expect(await events.next() == .subscribed(channel: "sluice:test"))
        try await eventuallySucceeds(client)
        _ = try await client.send("PUBLISH", "sluice:test", "before")
        #expect(await events.next() == .message(channel: "sluice:test", payload: ByteBuffer(string: "before")))

        try await server.restart()
        // The subscriber notices, reconnects and resubscribes by itself.
        #expect(await events.next() == .disconnected)
        var event = await events.next()
        while event == .disconnected { event = await events.next() }
        #expect(event == .subscribed(channel: "sluice:test"))

        try await eventuallySucceeds(client)
        _ = try await client.send("PUBLISH", "sluice:test", "after")
        #expect(await events.next() == .message(channel: "sluice:test", payload: ByteBuffer(string: "after")))
        running.cancel()
        _ = try? await running.value
        client.shutdown()
    }
}

private final class LoadProgress: Sendable {
    let successes = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let restarted = Atomic<Bool>(false)
}
