// An OpenAI-compatible mock model server for the demo, tests and load tests.
//   sluice-mock-upstream [--host 127.0.0.1] [--port 9000] [--models a,b] [--tokens 16]
//                        [--tokens-per-second 0] [--tokens-per-chunk 1] [--latency-ms 0]
//                        [--error-rate 0] [--disconnect-after N] [--usage-scale 1]
//                        [--profile openai|vllm|trtllm|dynamo] [--context-length N] [--api-key K]
import Foundation
import Hummingbird
import HummingbirdWebSocket
import SluiceMockUpstream

var behavior = MockUpstreamBehavior()
var host = "127.0.0.1"
var port = 9000
var models = ["mock-model"]
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let flag = arguments.next() {
    guard let value = arguments.next() else { fatalError("\(flag) needs a value") }
    switch flag {
    case "--host": host = value
    case "--port": port = Int(value) ?? port
    case "--models": models = value.split(separator: ",").map(String.init)
    case "--tokens": behavior.completionTokens = Int(value) ?? behavior.completionTokens
    case "--tokens-per-second": behavior.tokensPerSecond = Double(value) ?? 0
    case "--tokens-per-chunk": behavior.tokensPerChunk = Int(value) ?? 1
    case "--latency-ms": behavior.latency = .milliseconds(Int(value) ?? 0)
    case "--error-rate": behavior.errorRate = Double(value) ?? 0
    case "--disconnect-after": behavior.disconnectAfterTokens = Int(value)
    case "--usage-scale": behavior.usageScale = Double(value) ?? 1
    case "--profile":
        guard let profile = ServerProfile(rawValue: value) else { fatalError("--profile: openai, vllm, trtllm or dynamo") }
        behavior.profile = profile
    case "--context-length": behavior.contextLength = Int(value)
    case "--api-key": behavior.requiredHeaders = [("authorization", "Bearer \(value)")]
    default: fatalError("unknown flag \(flag)")
    }
}
let mock = MockUpstream(behavior: behavior, models: models)
let app = Application(router: mock.router(),
                      server: .http1WebSocketUpgrade(webSocketRouter: mock.realtimeRouter(),
                                                     configuration: .init(maxFrameSize: 16 << 20)),
                      configuration: .init(address: .hostname(host, port: port), serverName: "sluice-mock-upstream"))
try await app.runService()
