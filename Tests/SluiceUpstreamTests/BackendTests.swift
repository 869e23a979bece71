import Foundation
import Hummingbird
import Logging
import NIOCore
import SluiceMockUpstream
import SluiceTestSupport
import Testing

@testable import SluiceUpstream

@Suite("Backends and selection")
struct BackendTests {
    @Test func urlsAreCheckedAndSplit() throws {
        let backend = try Backend(url: "https://models.internal:8443/openai/")
        #expect(backend.host == "models.internal" && backend.port == 8443 && backend.useTLS && backend.basePath == "/openai")
        let plain = try Backend(url: "http://127.0.0.1:9000")
        #expect(plain.port == 9000 && !plain.useTLS && plain.basePath == "")
        for bad in ["ftp://x", "127.0.0.1:9000", "http://", "not a url"] {
            #expect(throws: BackendURLError.self) { try Backend(url: bad) }
        }
    }

    @Test func leastOutstandingPerWeightAndMaxConcurrency() throws {
        let small = try Backend(url: "http://a:1", weight: 1, maxConcurrency: 2)
        let big = try Backend(url: "http://b:1", weight: 3)
        let selector = BackendSelector()
        var picks: [String] = []
        for _ in 0..<8 { picks.append(try #require(selector.acquire(from: [small, big])).url) }
        // Weight 3 takes three times the load; the small one never exceeds its two slots.
        #expect(picks.filter { $0 == "http://a:1" }.count == 2)
        #expect(small.outstanding == 2 && big.outstanding == 6)
        #expect(selector.acquire(from: [small]) == nil, "max_concurrency reached")
        small.releaseSlot()
        #expect(selector.acquire(from: [small]) === small)
        #expect(selector.acquire(from: [small, big], excluding: [big]) == nil)
    }

    @Test func threeFailuresEjectUntilASuccess() throws {
        let flaky = try Backend(url: "http://a:1")
        let steady = try Backend(url: "http://b:1")
        #expect(!flaky.recordFailure() && !flaky.recordFailure() && flaky.recordFailure())
        #expect(!flaky.isHealthy())
        for _ in 0..<5 {
            let chosen = try #require(BackendSelector().acquire(from: [flaky, steady]))
            #expect(chosen === steady)
            chosen.releaseSlot()
        }
        // Everything ejected: still try rather than fail outright.
        #expect(BackendSelector().acquire(from: [flaky]) === flaky)
        flaky.recordSuccess()
        #expect(flaky.isHealthy())
    }

    @Test func activeHealthChecksEjectADeadBackendAndRestoreALiveOne() async throws {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "mock")
        logger.logLevel = .critical
        let app = Application(router: MockUpstream().router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) }, logger: logger)
        let server = Task { try await app.run() }
        defer { server.cancel() }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())

        let client = try UpstreamClient()
        let checker = BackendHealthChecker(backends: [], client: client, logger: logger)
        let live = try Backend(url: "http://127.0.0.1:\(port)")
        let dead = try Backend(url: "http://127.0.0.1:\(try await RedisServerProcess.freePort())")
        for _ in 0..<3 { #expect(await checker.check(dead) == false) }
        #expect(!dead.isHealthy())
        for _ in 0..<3 { live.recordFailure() }
        #expect(!live.isHealthy())
        #expect(await checker.check(live))
        #expect(live.isHealthy(), "a passing health check brings the backend back")
        client.shutdown()
    }
}
