import Foundation
import Logging
import NIOCore
import SluiceDataPlane
import SluiceLimiter
import SluiceMockUpstream
import SluiceRedis
import SluiceTenancy
import SluiceTestSupport
import SluiceUpstream
import Testing

/// "Settled exactly once" must not depend on the listener running the stream's body: the
/// pipeline itself, over real Redis, PostgreSQL and a mock model server.
@Suite("Stream settlement")
struct StreamSettlementTests {
    @Test func aStreamDroppedBeforeItsBodyRanSettlesAndFreesItsSlot() async throws {
        try await PostgresFixture.withClient { client, store in
            try await withThrowingTaskGroup(of: Void.self) { group in
                var behavior = MockUpstreamBehavior()
                behavior.completionTokens = 4
                let port = try await GatewayHarness.startMock(behavior, in: &group)
                let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
                let upstream = try UpstreamClient(logger: Logger(label: "t"))
                defer {
                    redis.shutdown()
                    upstream.shutdown()
                }
                let hasher = KeyHasher(pepper: "stream-settlement-pepper")
                let tenant = try await store.createTenant(name: "drop", limits: Limits(), modelLimits: [:], actor: "test")
                let (_, key) = try await store.createKey(tenantID: tenant.id, name: "drop", limits: Limits(maxConcurrentRequests: 1),
                                                         models: nil, expiresAt: nil, hasher: hasher, actor: "test")
                let catalog = ModelCatalog([ModelRoute(name: "m", backends: [try Backend(url: "http://127.0.0.1:\(port)")])])
                let pipeline = InferencePipeline(
                    catalog: catalog, resolver: KeyResolver(database: store, redis: redis, hasher: hasher),
                    limiter: Limiter(client: redis), upstream: upstream,
                    usageFallback: LedgerFallbackWriter(ledger: UsageLedger(client: client, logger: Logger(label: "t")),
                                                        logger: Logger(label: "t")))
                func call(stream: Bool) async -> InferenceResult {
                    let body = ByteBuffer(string: #"{"model": "m", "messages": [], "stream": \#(stream)}"#)
                    return await pipeline.handle(InferenceCall(endpoint: .chatCompletions, authorization: "Bearer \(key)",
                                                               requestID: UUID().uuidString)) { body }
                }

                do {
                    let dropped = await call(stream: true)
                    guard case .stream = dropped else {
                        Issue.record("expected a stream, got \(dropped)")
                        return
                    }
                    // Dropped here: nobody reads it or cancels it.
                }
                var admitted = false
                for _ in 0..<250 where !admitted {
                    if case .complete(200, _, _) = await call(stream: false) { admitted = true } else {
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                #expect(admitted, "the dropped stream kept its concurrency slot (until its 120 s lease)")
                group.cancelAll()
            }
        }
    }
}
