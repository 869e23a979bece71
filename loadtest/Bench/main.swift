// Round trips per second with a fixed number of concurrent callers, one mode per run:
//   evalsha        a trivial EVALSHA through SluiceRedis (redis-bench.sh compares it with redis-benchmark)
//   limiter        one admit + one settle through SluiceLimiter (limiter-bench.sh)
//   key-memory     key authentication answered from replica memory (key-bench.sh)
//   key-redis      ... from the Redis cache tier (memory TTL zero)
//   key-postgres   ... from PostgreSQL (memory TTL zero, no Redis); one key per caller, so
//                  single-flight does not merge the callers' queries
//   ledger         one UsageLedger.insert of --batch rows (the metering worker's batches), a
//                  tenth of them ids already written; then checks each id is in the ledger once
//                  (ledger-bench.sh). "requests" counts batches.
//
//   sluice-bench [--mode evalsha] [--url redis://127.0.0.1:6379/0] [--database-url postgres://...]
//                [--concurrency 64] [--requests 200000] [--pool 2]
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import SluiceLimiter
import SluiceRedis
import SluiceTenancy

struct Options {
    var url = "redis://127.0.0.1:6379/0"
    var databaseURL = "postgres://sluice:sluice@127.0.0.1:15432/sluice"
    var concurrency = 64
    var requests = 200_000
    var pool = 2
    var mode = "evalsha"
    var batch = 500

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { fatalError("\(flag) needs a value") }
            switch flag {
            case "--url": url = value
            case "--database-url": databaseURL = value
            case "--concurrency": concurrency = Int(value) ?? concurrency
            case "--requests": requests = Int(value) ?? requests
            case "--pool": pool = Int(value) ?? pool
            case "--mode": mode = value
            case "--batch": batch = Int(value) ?? batch
            default: fatalError("unknown flag \(flag)")
            }
        }
    }
}

/// Runs `operation(caller, index)` `perCaller` times from each of `concurrency` tasks; returns seconds.
func measure(concurrency: Int, perCaller: Int, _ operation: @escaping @Sendable (Int, Int) async throws -> Void) async throws -> Double {
    let elapsed = try await ContinuousClock().measure {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for caller in 0..<concurrency {
                group.addTask {
                    for index in 0..<perCaller { try await operation(caller, index) }
                }
            }
            try await group.waitForAll()
        }
    }
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

let options = Options(CommandLine.arguments)
var configuration = try RedisConfiguration(url: options.url)
configuration.poolSize = options.pool
let client = try RedisClient(configuration: configuration)
let perCaller = options.requests / options.concurrency
var logger = Logger(label: "sluice.bench")
logger.logLevel = .error

let operation: @Sendable (Int, Int) async throws -> Void
var postgres: PostgresClient?
switch options.mode {
case "evalsha":
    let script = RedisScript(name: "trivial", source: "return 1")
    try await client.load([script])
    operation = { _, _ in
        let reply = try await client.evalScript(script, keys: [], arguments: [])
        precondition(reply == .integer(1))
    }
case "limiter":
    try await client.load(LimiterScripts.all)
    let limiter = Limiter(client: client)
    let tenant = "bench\(Int.random(in: 0..<1_000_000_000))"
    let generous = Limits(requestsPerMinute: 100_000_000, tokensPerMinute: 1_000_000_000, maxConcurrentRequests: 100_000)
    operation = { caller, index in
        let request = AdmitRequest(requestID: "\(tenant)-\(caller)-\(index)", tenantID: tenant, keyID: "k", model: "m",
                                   tokensToReserve: 100, tenantLimits: generous, keyLimits: generous)
        guard case .admitted(let admission) = await limiter.admit(request) else { fatalError("denied") }
        _ = try await limiter.settle(admission, usage: Usage(promptTokens: 40, completionTokens: 30, costMicroUSD: 7))
    }
case "key-memory", "key-redis", "key-postgres":
    let database = PostgresClient(configuration: try DatabaseURL.configuration(options.databaseURL), backgroundLogger: logger)
    postgres = database
    Task { await database.run() }
    try await Migrator(client: database, logger: logger).migrate()
    let store = TenantStore(client: database, logger: logger)
    let hasher = KeyHasher(pepper: "bench-pepper")
    let tenant = try await store.createTenant(name: "bench", limits: Limits(), modelLimits: [:], actor: "bench")
    var keys: [String] = []
    for _ in 0..<options.concurrency {
        keys.append(try await store.createKey(tenantID: tenant.id, name: "bench", limits: Limits(), models: nil,
                                              expiresAt: nil, hasher: hasher, actor: "bench").1)
    }
    var settings = KeyResolverSettings()
    if options.mode != "key-memory" { settings.memoryTTL = .zero }
    let resolver = KeyResolver(database: store, redis: options.mode == "key-postgres" ? nil : client, hasher: hasher,
                               settings: settings)
    let presented = keys
    for key in presented { _ = await resolver.authenticate(key) }  // fills memory and the Redis tier
    operation = { caller, _ in
        guard case .valid = await resolver.authenticate(presented[caller]) else { fatalError("key refused") }
    }
case "ledger":
    let database = PostgresClient(configuration: try DatabaseURL.configuration(options.databaseURL), backgroundLogger: logger)
    postgres = database
    Task { await database.run() }
    try await Migrator(client: database, logger: logger).migrate()
    let ledger = UsageLedger(client: database, logger: logger)
    let tenants = (0..<100).map { _ in UUID() }
    let batch = options.batch
    let repeats = batch / 10
    operation = { caller, index in
        // Ids are unique per (caller, index, row); the first tenth repeats the previous batch's.
        let rows = (0..<batch).map { row in
            let id = row < repeats && index > 0 ? "\(caller)-\(index - 1)-\(batch - 1 - row)" : "\(caller)-\(index)-\(row)"
            return UsageEntry(requestID: id, tenantID: tenants[caller % tenants.count], keyID: "k", model: "m",
                              promptTokens: 10, completionTokens: 20, costMicroUSD: 30, at: Date())
        }
        try await ledger.insert(rows)
    }
default:
    fatalError("unknown mode \(options.mode)")
}

// Warm up before timing.
_ = try await measure(concurrency: options.concurrency, perCaller: max(1, 1_000 / options.concurrency)) { caller, index in
    try await operation(caller, -index - 1)
}
let seconds = try await measure(concurrency: options.concurrency, perCaller: perCaller, operation)
let total = perCaller * options.concurrency
if options.mode == "ledger", let postgres {
    // Every id written once: as many ledger rows as request ids, none repeated.
    var counts: [Int] = []
    for query: PostgresQuery in ["SELECT count(*)::int8 FROM usage_ledger", "SELECT count(*)::int8 FROM usage_request_ids",
                                 "SELECT count(*)::int8 FROM (SELECT DISTINCT tenant_id, request_id FROM usage_ledger) d"] {
        for try await count in try await postgres.query(query, logger: logger).decode(Int.self) { counts.append(count) }
    }
    let rows = Double(total * options.batch)
    // Warm-up batches are all new; each caller's first timed batch too, then 9 in 10 rows.
    let warmUp = options.concurrency * max(1, 1_000 / options.concurrency) * options.batch
    let expected = warmUp + options.concurrency * (options.batch + (perCaller - 1) * (options.batch - options.batch / 10))
    print("sluice-bench mode=ledger batches=\(total) batch=\(options.batch) concurrency=\(options.concurrency) "
        + "seconds=\(String(format: "%.3f", seconds)) rows_per_s=\(Int(rows / seconds)) "
        + "new_rows_per_s=\(Int(rows * 0.9 / seconds)) ledger_rows=\(counts[0]) request_ids=\(counts[1]) distinct=\(counts[2]) "
        + "expected=\(expected) exact=\(counts[0] == counts[1] && counts[1] == counts[2] && counts[0] == expected)")
    exit(0)
}
print("sluice-bench mode=\(options.mode) requests=\(total) concurrency=\(options.concurrency) pool=\(options.pool) "
    + "seconds=\(String(format: "%.3f", seconds)) rps=\(Int(Double(total) / seconds)) "
    + "mean_us=\(String(format: "%.1f", seconds * 1e6 * Double(options.concurrency) / Double(total)))")
client.shutdown()
