// EVALSHA round trips per second through SluiceRedis, with a fixed number of concurrent
// callers. loadtest/redis-bench.sh runs it next to redis-benchmark in the same run.
//
//   sluice-redis-bench [--url redis://127.0.0.1:6379/0] [--concurrency 64] [--requests 200000] [--pool 2]
import Foundation
import NIOCore
import NIOPosix
import SluiceRedis

struct Options {
    var url = "redis://127.0.0.1:6379/0"
    var concurrency = 64
    var requests = 200_000
    var pool = 2

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { fatalError("\(flag) needs a value") }
            switch flag {
            case "--url": url = value
            case "--concurrency": concurrency = Int(value) ?? concurrency
            case "--requests": requests = Int(value) ?? requests
            case "--pool": pool = Int(value) ?? pool
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
try await client.load([script])

// Warm up the connections before timing.
for _ in 0..<1_000 { _ = try await client.evalScript(script, keys: [], arguments: []) }

let perCaller = options.requests / options.concurrency
let clock = ContinuousClock()
let elapsed = try await clock.measure {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<options.concurrency {
            group.addTask {
                for _ in 0..<perCaller {
                    let reply = try await client.evalScript(script, keys: [], arguments: [])
                    precondition(reply == .integer(1))
                }
            }
        }
        try await group.waitForAll()
    }
}
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let total = perCaller * options.concurrency
print("sluice-redis-bench requests=\(total) concurrency=\(options.concurrency) pool=\(options.pool) seconds=\(String(format: "%.3f", seconds)) rps=\(Int(Double(total) / seconds))")
client.shutdown()
