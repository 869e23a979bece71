import Foundation
import NIOCore

/// The inference endpoints Sluice proxies.
public enum InferenceEndpoint: String, Sendable, CaseIterable {
    case chatCompletions = "/v1/chat/completions"
    case completions = "/v1/completions"
    case embeddings = "/v1/embeddings"

    var streams: Bool { self != .embeddings }
}

/// What the gateway needs from a request body, read once.
struct InferenceRequestBody {
    let model: String
    let stream: Bool
    /// The client asked for `stream_options.include_usage` itself (then the usage chunk stays).
    let clientWantsUsage: Bool
    let maxOutputTokens: Int?
    /// A conservative prompt estimate: a token is rarely shorter than 3 bytes of JSON text.
    let promptEstimate: Int
    /// The body to send upstream (with `stream_options.include_usage` added for streams).
    let upstreamBody: ByteBuffer

    static func parse(_ buffer: ByteBuffer, endpoint: InferenceEndpoint) throws(OpenAIError) -> InferenceRequestBody {
        let data = Data(buffer.readableBytesView)
        guard let json = try? JSONSerialization.jsonObject(with: data), var object = json as? [String: Any] else {
            throw .invalidRequest("the body must be a JSON object")
        }
        guard let modelValue = object["model"] else { throw .invalidRequest("'model' is required", param: "model") }
        guard let model = modelValue as? String, !model.isEmpty, model.utf8.count <= 256 else {
            throw .invalidRequest("'model' must be a non-empty string", param: "model")
        }
        var stream = false
        if let value = object["stream"], !(value is NSNull) {
            guard let flag = Self.bool(value) else { throw .invalidRequest("'stream' must be a boolean", param: "stream") }
            stream = flag
        }
        if stream && !endpoint.streams { throw .invalidRequest("'stream' is not supported here", param: "stream") }
        var maxOutput: Int?
        for field in ["max_completion_tokens", "max_tokens"] {
            guard let value = object[field], !(value is NSNull) else { continue }
            guard let number = Self.integer(value), number >= 1 else {
                throw .invalidRequest("'\(field)' must be a positive integer", param: field)
            }
            maxOutput = number
            break
        }
        switch endpoint {
        case .chatCompletions:
            guard object["messages"] is [Any] else { throw .invalidRequest("'messages' must be an array", param: "messages") }
        case .completions:
            guard object["prompt"] != nil else { throw .invalidRequest("'prompt' is required", param: "prompt") }
        case .embeddings:
            guard object["input"] != nil else { throw .invalidRequest("'input' is required", param: "input") }
        }

        var clientWantsUsage = false
        var upstreamBody = buffer
        if stream {
            var options = object["stream_options"] as? [String: Any] ?? [:]
            if let include = options["include_usage"] { clientWantsUsage = Self.bool(include) ?? false }
            if !clientWantsUsage {
                options["include_usage"] = true
                object["stream_options"] = options
                if let encoded = try? JSONSerialization.data(withJSONObject: object) {
                    upstreamBody = ByteBuffer(bytes: encoded)
                }
            }
        }
        return InferenceRequestBody(model: model, stream: stream, clientWantsUsage: clientWantsUsage,
                                    maxOutputTokens: maxOutput, promptEstimate: max(1, buffer.readableBytes / 3),
                                    upstreamBody: upstreamBody)
    }

    /// JSONSerialization gives NSNumber for numbers and booleans alike; booleans are the
    /// NSNumber subclass that `NSNumber(value: true)` has.
    private static let booleanType = type(of: NSNumber(value: true))

    private static func isBoolean(_ value: Any) -> Bool {
        type(of: value as AnyObject) == booleanType
    }

    private static func bool(_ value: Any) -> Bool? {
        guard isBoolean(value), let number = value as? NSNumber else { return nil }
        return number.boolValue
    }

    private static func integer(_ value: Any) -> Int? {
        guard !isBoolean(value), let number = value as? NSNumber else { return nil }
        let double = number.doubleValue
        guard double.rounded() == double, double.magnitude < 1e12 else { return nil }
        return Int(double)
    }
}
