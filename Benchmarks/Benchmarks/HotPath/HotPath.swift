import Benchmark
import NIOCore
import SluiceDataPlane
import SluiceLog
import SluiceTenancy

/// The pieces every request goes through, each alone: wall time, CPU and mallocs per call.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
                                           maxDuration: .seconds(2))

    let key = APIKey.generate()
    let hasher = KeyHasher(pepper: "benchmark-pepper-0123456789")
    let stored = hasher.hash(key.secret)
    Benchmark("key parse and HMAC check") { benchmark in
        for _ in benchmark.scaledIterations {
            guard let parsed = APIKey(parsing: key.plaintext) else { fatalError("key did not parse") }
            blackHole(hasher.matches(parsed.secret, storedHash: stored))
        }
    }

    let body = ByteBuffer(string: #"{"model":"llama-3-8b","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say something short about the sea, in one sentence, please."}],"max_tokens":64,"temperature":0.2,"stream":true}"#)
    Benchmark("request body scan (stream, include_usage spliced)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try? InferenceRequestBody.parse(body, endpoint: .chatCompletions))
        }
    }

    var line = JSONLineEncoder(capacity: 512)
    Benchmark("access log line encoding") { benchmark in
        for _ in benchmark.scaledIterations {
            line.begin()
            line.field("ts", raw: LogTimestamp.now())
            line.field("level", "info")
            line.field("logger", "sluice.access")
            line.field("msg", "request")
            line.field("request_id", "5dd6a1b2-6c0e-4b8e-9a55-2f4a0c9e1d7e")
            line.field("endpoint", "/v1/chat/completions")
            line.field("status", 200)
            line.field("latency_ms", 42)
            line.field("tenant_id", "a2c7660e-0f7d-42ed-9916-7428e548d24e")
            line.field("key_id", "SLzS1HsVjEzC")
            line.field("model", "llama-3-8b")
            line.field("backend", "http://10.0.0.7:8000")
            line.field("prompt_tokens", 31)
            line.field("completion_tokens", 16)
            line.field("usage_source", "backend")
            line.end()
            blackHole(line.bytes.count)
        }
    }

    var stream = ""
    for _ in 0..<16 {
        stream += #"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}],"usage":null}"# + "\n\n"
    }
    stream += #"data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":16}}"# + "\n\n"
    stream += "data: [DONE]\n\n"
    let chunk = ByteBuffer(string: stream)
    Benchmark("SSE filtering (16 chunks with usage:null, usage chunk hidden)") { benchmark in
        for _ in benchmark.scaledIterations {
            var filter = ServerSentEventsFilter(dropUsageChunk: true)
            blackHole(filter.feed(chunk))
            blackHole(filter.flush())
        }
    }

    Benchmark("request id") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(RequestID.make())
        }
    }
}
