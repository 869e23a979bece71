// The fleet load driver: drives many concurrent clients at Sluice (through a balancer or at the
// replicas) and prints one JSON object with every outcome counted. loadtest/fleet.sh runs it.
//
//   sluice-load burst    --url http://127.0.0.1:20000 --key K --count 1000 --concurrency 512 [--model M] [--max-tokens 30]
//                        (opens every client's connection first, then fires the burst at once)
//   sluice-load paced    --url ... --key K --rate 20 --seconds 60           (requests per second, open loop;
//                        prints {"started": true} when the first request goes, then the result with every outcome)
//   sluice-load hold     --url ... --key K --count 4 --model slow-model --seconds 60
//                        (opens count streams, prints {"started": count} once all are flowing, reads on)
//   sluice-load revoke   --urls http://a,http://b --key K --key-id ID --admin http://127.0.0.1:20180 --token JWT
import Foundation
import NIOCore
import NIOHTTP1
import SluiceUpstream

struct Options {
    var mode = ""
    var values: [String: String] = [:]

    init(_ arguments: [String]) {
        mode = arguments.dropFirst().first ?? ""
        var iterator = arguments.dropFirst(2).makeIterator()
        while let flag = iterator.next() {
            guard flag.hasPrefix("--"), let value = iterator.next() else { fatalError("bad argument \(flag)") }
            values[String(flag.dropFirst(2))] = value
        }
    }

    func string(_ name: String, _ fallback: String? = nil) -> String {
        guard let value = values[name] ?? fallback else { fatalError("--\(name) is required") }
        return value
    }

    func int(_ name: String, _ fallback: Int) -> Int { number(name, fallback, Int.init) }
    func double(_ name: String, _ fallback: Double) -> Double { number(name, fallback, Double.init) }

    /// A mistyped number stops the run: a silent fallback would run a different test.
    private func number<T>(_ name: String, _ fallback: T, _ parse: (String) -> T?) -> T {
        guard let text = values[name] else { return fallback }
        guard let value = parse(text) else { fatalError("--\(name) must be a number, not \(text)") }
        return value
    }
}

/// Every request's outcome: when it started (seconds into the run), its HTTP status (0 =
/// transport error), how long it took, and the tokens it reported.
struct Outcome {
    var start: Double
    var status: Int
    var milliseconds: Double
    var tokens: Int
    /// The OpenAI error code of a refusal (e.g. `limiter_unavailable`), else empty.
    var code = ""
}

actor Tally {
    private(set) var outcomes: [Outcome] = []
    func add(_ outcome: Outcome) { outcomes.append(outcome) }
    /// An outcome known only by its status (the `hold` mode's streams).
    func add(status: Int) { add(Outcome(start: 0, status: status, milliseconds: 0, tokens: 0)) }

    var statuses: [String: Int] { outcomes.reduce(into: [:]) { $0[String($1.status), default: 0] += 1 } }
    var admitted: Int { outcomes.count { $0.status == 200 } }
    var tokensAdmitted: Int { outcomes.reduce(0) { $0 + $1.tokens } }

    /// p50 / p99 / p999 / max latency in milliseconds.
    var latency: [String: Double] {
        let sorted = outcomes.map(\.milliseconds).sorted()
        func at(_ fraction: Double) -> Double {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
        }
        return ["p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": sorted.last ?? 0]
    }

    /// Every outcome as [start s, status, ms], for the runner's own phase and chart arithmetic.
    var rows: [[Double]] { outcomes.map { [($0.start * 1_000).rounded() / 1_000, Double($0.status), ($0.milliseconds * 10).rounded() / 10] } }
    /// The error code of each row (same order).
    var codes: [String] { outcomes.map(\.code) }
}

/// Hands out request numbers up to a limit.
actor Tickets {
    private var issued = 0
    let limit: Int
    init(limit: Int) { self.limit = limit }
    func take() -> Bool {
        guard issued < limit else { return false }
        issued += 1
        return true
    }
}

let options = Options(CommandLine.arguments)
var timeouts = UpstreamTimeouts()
timeouts.firstByte = .seconds(30)
let client = try UpstreamClient(timeouts: timeouts, maxIdlePerPool: 1_024)
let model = options.string("model", "fleet-model")
let maxTokens = options.int("max-tokens", 16)
let body = ByteBuffer(string: #"{"model": "\#(model)", "messages": [{"role": "user", "content": "hi"}], "max_tokens": \#(maxTokens)}"#)
let clock = ContinuousClock()

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// One chat completion; `key` nil sends none (a cheap 401 that opens a keep-alive connection).
func call(_ backend: Backend, key: String?, runStart: ContinuousClock.Instant) async -> Outcome {
    var headers = HTTPHeaders([("content-type", "application/json")])
    if let key { headers.add(name: "authorization", value: "Bearer \(key)") }
    let started = clock.now
    func outcome(_ status: Int, tokens: Int = 0, code: String = "") -> Outcome {
        Outcome(start: seconds(started - runStart), status: status, milliseconds: seconds(clock.now - started) * 1_000,
                tokens: tokens, code: code)
    }
    do {
        let response = try await client.send(UpstreamRequest(path: "/v1/chat/completions", headers: headers, body: body), to: backend)
        let payload = try await response.collect(limit: 1 << 20)
        let json = try? JSONSerialization.jsonObject(with: Data(payload.readableBytesView)) as? [String: Any]
        if response.head.status == .ok {
            let usage = json?["usage"] as? [String: Any]
            return outcome(200, tokens: (usage?["total_tokens"] as? Int) ?? 0)
        }
        let code = ((json?["error"] as? [String: Any])?["code"] as? String) ?? ""
        return outcome(Int(response.head.status.code), code: code)
    } catch {
        return outcome(0, code: "\(error)")
    }
}

/// One JSON object per line, written unbuffered (the fleet runner reads lines as they come).
func printJSON(_ object: [String: Any]) {
    var data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    data.append(0x0A)
    FileHandle.standardOutput.write(data)
}

switch options.mode {
case "burst":
    let backend = try Backend(url: options.string("url"))
    let key = options.string("key")
    let count = options.int("count", 1_000)
    let concurrency = options.int("concurrency", 512)
    // Connections first, so the burst itself is short: a burst that lasts longer than one
    // emission interval (60/limit s) would rightly see the limiter refill.
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<concurrency { group.addTask { _ = await call(backend, key: nil, runStart: clock.now) } }
    }
    let tally = Tally()
    let tickets = Tickets(limit: count)
    let started = clock.now
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                while await tickets.take() { await tally.add(await call(backend, key: key, runStart: started)) }
            }
        }
    }
    printJSON(["mode": "burst", "count": count, "concurrency": concurrency, "seconds": seconds(clock.now - started),
               "statuses": await tally.statuses, "admitted": await tally.admitted,
               "tokens_admitted": await tally.tokensAdmitted, "latency": await tally.latency])
case "paced":
    let backend = try Backend(url: options.string("url"))
    let key = options.string("key")
    let rate = options.double("rate", 20)
    let duration = options.int("seconds", 60)
    let tally = Tally()
    let started = clock.now
    printJSON(["started": true])
    await withTaskGroup(of: Void.self) { group in
        var sent = 0
        while clock.now - started < .seconds(duration) {
            try? await clock.sleep(until: started + .seconds(Double(sent) / rate))
            sent += 1
            group.addTask { await tally.add(await call(backend, key: key, runStart: started)) }
        }
    }
    printJSON(["mode": "paced", "rate_per_second": rate, "seconds": duration, "statuses": await tally.statuses,
               "admitted": await tally.admitted, "latency": await tally.latency, "outcomes": await tally.rows,
               "codes": await tally.codes])
case "hold":
    let backend = try Backend(url: options.string("url"))
    let key = options.string("key")
    let count = options.int("count", 4)
    let seconds = options.int("seconds", 60)
    let streamBody = ByteBuffer(string: #"{"model": "\#(model)", "stream": true, "messages": [{"role": "user", "content": "hi"}]}"#)
    let headers = HTTPHeaders([("content-type", "application/json"), ("authorization", "Bearer \(key)")])
    let flowing = Tally()
    let started = clock.now
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<count {
            group.addTask {
                guard let response = try? await client.send(
                    UpstreamRequest(path: "/v1/chat/completions", headers: headers, body: streamBody), to: backend) else {
                    await flowing.add(status: 0)
                    return
                }
                guard response.head.status == .ok, (try? await response.nextChunk()) != nil else {
                    await flowing.add(status: Int(response.head.status.code))
                    response.abandon()
                    return
                }
                await flowing.add(status: 200)
                if await flowing.admitted == count {
                    printJSON(["started": count])
                }
                while clock.now - started < .seconds(seconds), (try? await response.nextChunk()) != nil {}
                response.abandon()
            }
        }
    }
    printJSON(["mode": "hold", "statuses": await flowing.statuses])
case "revoke":
    let replicas = try options.string("urls").split(separator: ",").map { try Backend(url: String($0)) }
    let key = options.string("key")
    for replica in replicas {
        let status = await call(replica, key: key, runStart: clock.now).status
        precondition(status == 200, "key refused before revocation (\(status))")
    }
    let admin = try Backend(url: options.string("admin"))
    let revokeHeaders = HTTPHeaders([("authorization", "Bearer \(options.string("token"))")])
    let started = clock.now
    let revoke = try await client.send(UpstreamRequest(path: "/admin/v1/keys/\(options.string("key-id"))/revoke",
                                                       headers: revokeHeaders), to: admin)
    _ = try await revoke.collect(limit: 1 << 16)
    precondition(revoke.head.status == .ok, "revoke answered \(revoke.head.status)")
    var refusedAfter: [String: Double] = [:]
    await withTaskGroup(of: (String, Double).self) { group in
        for replica in replicas {
            group.addTask {
                while clock.now - started < .seconds(10) {
                    if await call(replica, key: key, runStart: started).status == 401 { break }
                }
                return (replica.url, seconds(clock.now - started) * 1_000)
            }
        }
        for await (url, milliseconds) in group { refusedAfter[url] = milliseconds }
    }
    printJSON(["mode": "revoke", "refused_after_ms": refusedAfter, "slowest_ms": refusedAfter.values.max() ?? -1])
default:
    fatalError("mode must be burst, paced, hold or revoke")
}
client.shutdown()
