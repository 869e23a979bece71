import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// How the mock model server behaves. Every instance has one behaviour; tests start one per
/// case they need.
public struct MockUpstreamBehavior: Sendable {
    /// Completion tokens per answer (capped by the request's max_tokens).
    public var completionTokens = 16
    /// Streaming pace; 0 streams as fast as possible.
    public var tokensPerSecond: Double = 0
    public var tokensPerChunk = 1
    /// Delay before the first byte of any answer.
    public var latency: Duration = .zero
    /// Fraction of requests answered 500.
    public var errorRate: Double = 0
    /// Close the connection after this many streamed tokens (a model server dying mid-stream).
    public var disconnectAfterTokens: Int?
    /// Never answer (a hung model server).
    public var hang = false
    /// Report usage less (or more) than the tokens sent, to exercise refunds and debt.
    public var usageScale: Double = 1
    /// What the `usage` object says (a misbehaving backend can omit it or report nonsense).
    public var usageReport = UsageReport.honest
    /// Headers every /v1 request must carry (vLLM's `--api-key` wants `authorization: Bearer <key>`);
    /// a request without them gets vLLM's 401.
    public var requiredHeaders: [(String, String)] = []
    /// Which server's quirks to imitate.
    public var profile = ServerProfile.openai
    /// The model's context: a prompt plus `max_tokens` beyond it is refused as that server does.
    public var contextLength: Int?
    /// Prompt tokens reported as served from the prefix cache (`prompt_tokens_details.cached_tokens`).
    public var cachedPromptTokens = 0
    /// Input tokens each Realtime `response.done` reports.
    public var realtimeInputTokens = 12

    public enum UsageReport: Sendable {
        case honest
        /// No `usage` object at all (nor a usage chunk on streams).
        case omitted
        /// This JSON text as the `usage` value, verbatim.
        case raw(String)
    }

    public init() {}
}

/// An OpenAI-compatible model server for tests, the demo and load tests: chat completions,
/// completions, embeddings and the model list, with streaming and usage reports.
public struct MockUpstream: Sendable {
    public let behavior: MockUpstreamBehavior
    public let models: [String]

    public init(behavior: MockUpstreamBehavior = .init(), models: [String] = ["mock-model"]) {
        self.behavior = behavior
        self.models = models
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/v1/models") { request, _ in
            if let refusal = refusal(request) { return refusal }
            return json(["object": "list", "data": models.map { ["id": $0, "object": "model", "created": 0, "owned_by": "mock"] }])
        }
        router.post("/v1/chat/completions") { request, context in try await answer(request, context, kind: .chat) }
        router.post("/v1/completions") { request, context in try await answer(request, context, kind: .completion) }
        router.post("/v1/embeddings") { request, context in try await answer(request, context, kind: .embedding) }
        router.get("/health") { _, _ in Response(status: .ok) }
        return router
    }

    enum Kind { case chat, completion, embedding }

    /// vLLM's answer to a request without its API key.
    private func refusal(_ request: Request) -> Response? {
        for (name, value) in behavior.requiredHeaders {
            guard let field = HTTPField.Name(name), request.headers[field] == value else {
                return json(["error": "Unauthorized"], status: .unauthorized)
            }
        }
        return nil
    }

    private func answer(_ request: Request, _ context: BasicRequestContext, kind: Kind) async throws -> Response {
        if let refusal = refusal(request) { return refusal }
        let data = Data(try await request.body.collect(upTo: 16 * 1024 * 1024).readableBytesView)
        guard let body = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            return json(["error": ["message": "bad json", "type": "invalid_request_error", "param": NSNull(), "code": "bad_json"]],
                        status: .badRequest)
        }
        if behavior.hang {
            try await Task.sleep(for: .seconds(3_600))
        }
        if behavior.latency > .zero { try await Task.sleep(for: behavior.latency) }
        if behavior.errorRate > 0, Double.random(in: 0..<1) < behavior.errorRate {
            return json(["error": ["message": "mock failure", "type": "server_error", "param": NSNull(), "code": "mock"]],
                        status: .internalServerError)
        }
        let model = body["model"] as? String ?? "mock-model"
        let prompt = max(1, data.count / 4)
        if kind == .embedding {
            return json(["object": "list", "model": model,
                         "data": [["object": "embedding", "index": 0, "embedding": (0..<8).map { Double($0) / 8 }]],
                         "usage": ["prompt_tokens": prompt, "total_tokens": prompt]], usage: behavior.usageReport)
        }
        let limit = (body["max_completion_tokens"] as? Int) ?? (body["max_tokens"] as? Int) ?? behavior.completionTokens
        if let context = behavior.contextLength, prompt + limit > context {
            return json(behavior.profile.contextLengthError(limit: context, prompt: prompt, completion: limit), status: .badRequest)
        }
        let tokens = max(0, min(limit, behavior.completionTokens))
        let reported = Int((Double(tokens) * behavior.usageScale).rounded())
        var usage: [String: Any] = ["prompt_tokens": prompt, "completion_tokens": reported, "total_tokens": prompt + reported]
        if behavior.cachedPromptTokens > 0 {
            usage["prompt_tokens_details"] = ["cached_tokens": min(behavior.cachedPromptTokens, prompt)]
        }
        let id = "mock-\(UUID().uuidString.prefix(8))"
        let created = Int(Date().timeIntervalSince1970)
        // system_fingerprint echoes the W3C traceparent the mock received (tests check forwarding).
        let fingerprint = request.headers[values: HTTPField.Name("traceparent")!].first ?? "mock"
        guard (body["stream"] as? Bool) == true else {
            let text = Array(repeating: "tok", count: tokens).joined(separator: " ")
            let choice: [String: Any] = kind == .chat
                ? ["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": "stop"]
                : ["index": 0, "text": text, "finish_reason": "stop"]
            return json(["id": id, "object": kind == .chat ? "chat.completion" : "text_completion", "created": created,
                         "model": model, "choices": [choice], "usage": usage, "system_fingerprint": fingerprint],
                        usage: behavior.usageReport)
        }
        let includeUsage = ((body["stream_options"] as? [String: Any])?["include_usage"] as? Bool) == true
        let behavior = self.behavior
        let object = kind == .chat ? "chat.completion.chunk" : "text_completion"
        func chunk(_ text: String?, finish: String?) -> [String: Any] {
            var choice: [String: Any] = ["index": 0, "finish_reason": finish ?? NSNull()]
            if kind == .chat { choice["delta"] = text.map { ["content": $0] } ?? [:] } else { choice["text"] = text ?? "" }
            var chunk: [String: Any] = ["id": id, "object": object, "created": created, "model": model, "choices": [choice]]
            if includeUsage && behavior.profile.nullUsageOnEveryChunk { chunk["usage"] = NSNull() }
            return chunk
        }
        // Encode every event up front; the body closure only paces and writes bytes.
        var events: [(tokens: Int, bytes: ByteBuffer)] = []
        var sent = 0
        while sent < tokens {
            let count = min(behavior.tokensPerChunk, tokens - sent)
            events.append((count, event(chunk(String(repeating: "tok ", count: count), finish: nil))))
            sent += count
        }
        var tail = [event(chunk(nil, finish: "stop"))]
        if includeUsage, let usageEvent = encode(["id": id, "object": object, "created": created, "model": model,
                                                  "choices": [Any](), "usage": usage], usage: behavior.usageReport) {
            var buffer = ByteBuffer(string: "data: ")
            buffer.writeBytes(usageEvent)
            buffer.writeString("\n\n")
            tail.append(buffer)
        }
        tail.append(ByteBuffer(string: "data: [DONE]\n\n"))
        let closing = tail
        let paced = events
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                        body: ResponseBody { writer in
            var streamed = 0
            for (count, bytes) in paced {
                if let cut = behavior.disconnectAfterTokens, streamed >= cut { throw MockDisconnect() }
                try await writer.write(bytes)
                streamed += count
                if behavior.tokensPerSecond > 0 {
                    try await Task.sleep(for: .seconds(Double(count) / behavior.tokensPerSecond))
                }
            }
            for bytes in closing { try await writer.write(bytes) }
            try await writer.finish(nil)
        })
    }

    struct MockDisconnect: Error {}
}

private func event(_ object: [String: Any]) -> ByteBuffer {
    var buffer = ByteBuffer(string: "data: ")
    buffer.writeBytes((try? JSONSerialization.data(withJSONObject: object)) ?? Data())
    buffer.writeString("\n\n")
    return buffer
}

private func json(_ object: [String: Any], status: HTTPResponse.Status = .ok,
                  usage: MockUpstreamBehavior.UsageReport = .honest) -> Response {
    let data = encode(object, usage: usage) ?? Data()
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// JSON for `object`, its `usage` as the behaviour says; nil when a usage-only object loses its usage.
private func encode(_ object: [String: Any], usage report: MockUpstreamBehavior.UsageReport) -> Data? {
    var object = object
    switch report {
    case .honest:
        return try? JSONSerialization.data(withJSONObject: object)
    case .omitted:
        guard object["usage"] != nil else { return try? JSONSerialization.data(withJSONObject: object) }
        if (object["choices"] as? [Any])?.isEmpty == true { return nil }
        object["usage"] = nil
        return try? JSONSerialization.data(withJSONObject: object)
    case .raw(let text):
        guard object["usage"] != nil else { return try? JSONSerialization.data(withJSONObject: object) }
        object["usage"] = "__MOCK_USAGE__"
        guard let data = try? JSONSerialization.data(withJSONObject: object) else { return nil }
        return Data(String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\"__MOCK_USAGE__\"", with: text).utf8)
    }
}
