// Round trips per second through SluiceRedis with a fixed number of concurrent callers.
//   --mode evalsha   a trivial EVALSHA (loadtest/redis-bench.sh compares it with redis-benchmark)
//   --mode limiter   one admit + one settle through the SluiceLimiter API (loadtest/limiter-bench.sh)
//
//   sluice-redis-bench [--mode evalsha] [--url redis://127.0.0.1:6379/0] [--concurrency 64]
//                      [--requests 200000] [--pool 2]
import Foundation
import NIOCore
import NIOPosix
import SluiceLimiter
import SluiceRedis

struct Options {
    var url = "redis://127.0.0.1:6379/0"
    var concurrency = 64
    var requests = 200_000
    var pool = 2
    var mode = "evalsha"

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { fatalError("\(flag) needs a value") }
            switch flag {
            case "--url": url = value
            case "--concurrency": concurrency = Int(value) ?? concurrency
            case "--requests": requests = Int(value) ?? requests
            case "--pool": pool = Int(value) ?? pool
            case "--mode": mode = value
            default: fatalError("unknown flag \(flag)")
            }
        }
    }
}

let options = Options(CommandLine.arguments)
var configuration = try RedisConfiguration(url: options.url)
configuration.poolSize = options.pool
let client = try RedisClient(configuration: configuration)
let script = RedisScript(name: "trivial", source: "return 1")
try await client.load([script] + LimiterScripts.all)
let limiter = Limiter(client: client)
let tenant = "bench\(Int.random(in: 0..<1_000_000_000))"
let generous = Limits(requestsPerMinute: 100_000_000, tokensPerMinute: 1_000_000_000, maxConcurrentRequests: 100_000)

/// One operation of the chosen mode: an EVALSHA, or an admit + settle pair.
@Sendable func operation(_ index: Int) async throws {
    if options.mode == "limiter" {
        let request = AdmitRequest(requestID: "\(tenant)-\(index)", tenantID: tenant, keyID: "k", model: "m",
                                   tokensToReserve: 100, tenantLimits: generous, keyLimits: generous)
        guard case .admitted(let admission) = await limiter.admit(request) else { fatalError("denied") }
        _ = try await limiter.settle(admission, usage: Usage(promptTokens: 40, completionTokens: 30, costMicroUSD: 7))
    } else {
        let reply = try await client.evalScript(script, keys: [], arguments: [])
        precondition(reply == .integer(1))
    }
}

// Warm up the connections before timing.
for index in 0..<1_000 { try await operation(-index - 1) }

let perCaller = options.requests / options.concurrency
let clock = ContinuousClock()
let elapsed = try await clock.measure {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for caller in 0..<options.concurrency {
            group.addTask {
                for index in 0..<perCaller {
                    try await operation(caller * perCaller + index)
                }
            }
        }
        try await group.waitForAll()
    }
}
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let total = perCaller * options.concurrency
print("sluice-redis-bench mode=\(options.mode) requests=\(total) concurrency=\(options.concurrency) pool=\(options.pool) seconds=\(String(format: "%.3f", seconds)) rps=\(Int(Double(total) / seconds))")
client.shutdown()
