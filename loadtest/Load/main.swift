// The fleet load driver: drives many concurrent clients at Sluice (through a balancer or at the
// replicas) and prints one JSON object with every outcome counted. loadtest/fleet.sh runs it.
//
//   sluice-load burst    --url http://127.0.0.1:20000 --key K --count 1000 --concurrency 512 [--model M] [--max-tokens 30]
//   sluice-load paced    --url ... --key K --rate 20 --seconds 60           (requests per second, open loop)
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

    func int(_ name: String, _ fallback: Int) -> Int { values[name].flatMap(Int.init) ?? fallback }
}

/// Outcome counts of a run, by HTTP status (0 = transport error).
actor Tally {
    var statuses: [Int: Int] = [:]
    var tokensAdmitted = 0
    func add(_ status: Int, tokens: Int = 0) {
        statuses[status, default: 0] += 1
        tokensAdmitted += tokens
    }
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

/// One chat completion; returns the status and the completion tokens reported.
func call(_ backend: Backend, key: String) async -> (Int, Int) {
    let headers = HTTPHeaders([("content-type", "application/json"), ("authorization", "Bearer \(key)")])
    do {
        let response = try await client.send(UpstreamRequest(path: "/v1/chat/completions", headers: headers, body: body), to: backend)
        let payload = try await response.collect(limit: 1 << 20)
        var tokens = 0
        if response.head.status == .ok,
           let json = try? JSONSerialization.jsonObject(with: Data(payload.readableBytesView)) as? [String: Any],
           let usage = json["usage"] as? [String: Any] {
            tokens = (usage["total_tokens"] as? Int) ?? 0
        }
        return (Int(response.head.status.code), tokens)
    } catch {
        return (0, 0)
    }
}

/// One JSON object per line, written unbuffered (the fleet runner reads lines as they come).
func printJSON(_ object: [String: Any]) {
    var data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    data.append(0x0A)
    FileHandle.standardOutput.write(data)
}

func statuses(_ tally: Tally) async -> [String: Int] {
    Dictionary(uniqueKeysWithValues: await tally.statuses.map { (String($0.key), $0.value) })
}

let clock = ContinuousClock()
switch options.mode {
case "burst":
    let backend = try Backend(url: options.string("url"))
    let key = options.string("key")
    let count = options.int("count", 1_000)
    let concurrency = options.int("concurrency", 512)
    let tally = Tally()
    let tickets = Tickets(limit: count)
    let started = clock.now
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                while await tickets.take() {
                    let (status, tokens) = await call(backend, key: key)
                    await tally.add(status, tokens: tokens)
                }
            }
        }
    }
    let seconds = Double((clock.now - started).components.attoseconds) / 1e18 + Double((clock.now - started).components.seconds)
    printJSON(["mode": "burst", "count": count, "concurrency": concurrency, "seconds": seconds,
               "statuses": await statuses(tally), "admitted": await tally.statuses[200, default: 0],
               "tokens_admitted": await tally.tokensAdmitted])
case "paced":
    let backend = try Backend(url: options.string("url"))
    let key = options.string("key")
    let rate = Double(options.int("rate", 20))
    let seconds = options.int("seconds", 60)
    let tally = Tally()
    let started = clock.now
    await withTaskGroup(of: Void.self) { group in
        var sent = 0
        while clock.now - started < .seconds(seconds) {
            try? await clock.sleep(until: started + .seconds(Double(sent) / rate))
            sent += 1
            group.addTask { await tally.add((await call(backend, key: key)).0) }
        }
    }
    printJSON(["mode": "paced", "rate_per_second": rate, "seconds": seconds, "statuses": await statuses(tally),
               "admitted": await tally.statuses[200, default: 0]])
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
                    await flowing.add(0)
                    return
                }
                guard response.head.status == .ok, (try? await response.nextChunk()) != nil else {
                    await flowing.add(Int(response.head.status.code))
                    response.abandon()
                    return
                }
                await flowing.add(200)
                if await flowing.statuses[200, default: 0] == count {
                    printJSON(["started": count])
                }
                while clock.now - started < .seconds(seconds), (try? await response.nextChunk()) != nil {}
                response.abandon()
            }
        }
    }
    printJSON(["mode": "hold", "statuses": await statuses(flowing)])
case "revoke":
    let replicas = try options.string("urls").split(separator: ",").map { try Backend(url: String($0)) }
    let key = options.string("key")
    for replica in replicas {
        let (status, _) = await call(replica, key: key)
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
                    if await call(replica, key: key).0 == 401 { break }
                }
                let elapsed = clock.now - started
                return (replica.url, Double(elapsed.components.seconds) * 1_000 + Double(elapsed.components.attoseconds) / 1e15)
            }
        }
        for await (url, milliseconds) in group { refusedAfter[url] = milliseconds }
    }
    printJSON(["mode": "revoke", "refused_after_ms": refusedAfter, "slowest_ms": refusedAfter.values.max() ?? -1])
default:
    fatalError("mode must be burst, paced or revoke")
}
client.shutdown()
