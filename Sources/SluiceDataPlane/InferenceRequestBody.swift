import NIOCore

/// The inference endpoints Sluice proxies.
public enum InferenceEndpoint: String, Sendable, CaseIterable {
    case chatCompletions = "/v1/chat/completions"
    case completions = "/v1/completions"
    case embeddings = "/v1/embeddings"

    var streams: Bool { self != .embeddings }
}

/// What the gateway needs from a request body, read once. Public for the microbenchmarks.
public struct InferenceRequestBody: Sendable {
    public let model: String
    public let stream: Bool
    /// The client asked for `stream_options.include_usage` itself (then the usage chunk stays).
    public let clientWantsUsage: Bool
    public let maxOutputTokens: Int?
    /// A conservative prompt estimate: a token is rarely shorter than 3 bytes of JSON text.
    public let promptEstimate: Int
    /// The body to send upstream (with `stream_options.include_usage` added for streams).
    public let upstreamBody: ByteBuffer

    private static let wanted: Set<String> = ["model", "stream", "max_completion_tokens", "max_tokens", "messages", "prompt",
                                              "input", "stream_options"]

    /// Checked strictly (the whole body must be well-formed JSON) but in one pass with no
    /// objects built; `stream_options.include_usage` is spliced into the bytes for streams.
    public static func parse(_ buffer: ByteBuffer, endpoint: InferenceEndpoint) throws(OpenAIError) -> InferenceRequestBody {
        do {
            return try buffer.withUnsafeReadableBytes { bytes throws(OpenAIError) in
                try parse(bytes, buffer: buffer, endpoint: endpoint)
            }
        } catch {
            throw error
        }
    }

    private static func parse(_ bytes: UnsafeRawBufferPointer, buffer: ByteBuffer,
                              endpoint: InferenceEndpoint) throws(OpenAIError) -> InferenceRequestBody {
        let members: [String: JSONBodyScanner.Member]
        do {
            members = try JSONBodyScanner.scan(bytes, wanted: wanted)
        } catch {
            throw .invalidRequest("the body must be a JSON object: \(error.reason)")
        }
        guard let modelMember = members["model"] else { throw .invalidRequest("'model' is required", param: "model") }
        let model = modelMember.kind == .string ? JSONBodyScanner.decode(bytes, modelMember.value) : ""
        guard !model.isEmpty, model.utf8.count <= 256 else {
            throw .invalidRequest("'model' must be a non-empty string", param: "model")
        }
        var stream = false
        if let member = members["stream"], member.kind != .null {
            guard member.kind == .bool else { throw .invalidRequest("'stream' must be a boolean", param: "stream") }
            stream = bytes[member.value.lowerBound] == UInt8(ascii: "t")
        }
        if stream && !endpoint.streams { throw .invalidRequest("'stream' is not supported here", param: "stream") }
        var maxOutput: Int?
        for field in ["max_completion_tokens", "max_tokens"] {
            guard let member = members[field], member.kind != .null else { continue }
            guard member.kind == .number, let number = integer(bytes, member.value), number >= 1 else {
                throw .invalidRequest("'\(field)' must be a positive integer", param: field)
            }
            maxOutput = number
            break
        }
        switch endpoint {
        case .chatCompletions:
            guard members["messages"]?.kind == .array else { throw .invalidRequest("'messages' must be an array", param: "messages") }
        case .completions:
            guard members["prompt"] != nil else { throw .invalidRequest("'prompt' is required", param: "prompt") }
        case .embeddings:
            guard members["input"] != nil else { throw .invalidRequest("'input' is required", param: "input") }
        }

        var clientWantsUsage = false
        var upstreamBody = buffer
        if stream {
            let splice = try usageSplice(bytes, options: members["stream_options"])
            clientWantsUsage = splice == nil
            if let (range, text) = splice {
                var spliced = ByteBuffer()
                spliced.reserveCapacity(bytes.count + text.utf8.count)
                spliced.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[..<range.lowerBound]))
                spliced.writeString(text)
                spliced.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[range.upperBound...]))
                upstreamBody = spliced
            }
        }
        return InferenceRequestBody(model: model, stream: stream, clientWantsUsage: clientWantsUsage,
                                    maxOutputTokens: maxOutput, promptEstimate: max(1, bytes.count / 3),
                                    upstreamBody: upstreamBody)
    }

    /// Where to put `"include_usage": true` (bytes to replace, and with what), or nil when the
    /// client asked for usage itself.
    private static func usageSplice(_ bytes: UnsafeRawBufferPointer,
                                    options: JSONBodyScanner.Member?) throws(OpenAIError) -> (Range<Int>, String)? {
        guard let options, options.kind != .null else {
            if let options { return (options.value, #"{"include_usage":true}"#) }
            // No stream_options: add the member first in the object.
            let open = bytes.firstIndex(of: UInt8(ascii: "{"))! + 1
            return (open..<open, #""stream_options":{"include_usage":true},"#)
        }
        guard options.kind == .object else {
            throw .invalidRequest("'stream_options' must be an object", param: "stream_options")
        }
        let inner = UnsafeRawBufferPointer(rebasing: bytes[options.value])
        let members: [String: JSONBodyScanner.Member]
        do {
            members = try JSONBodyScanner.scan(inner, wanted: ["include_usage"])
        } catch {
            throw .invalidRequest("'stream_options' is malformed: \(error.reason)", param: "stream_options")
        }
        let base = options.value.lowerBound
        guard let include = members["include_usage"] else {
            let open = base + 1
            let empty = inner.dropFirst().dropLast().allSatisfy { [0x20, 0x09, 0x0A, 0x0D].contains($0) }
            return (open..<open, empty ? #""include_usage":true"# : #""include_usage":true,"#)
        }
        switch include.kind {
        case .bool where inner[include.value.lowerBound] == UInt8(ascii: "t"):
            return nil
        case .bool, .null:
            return ((base + include.value.lowerBound)..<(base + include.value.upperBound), "true")
        default:
            throw .invalidRequest("'stream_options.include_usage' must be a boolean", param: "stream_options")
        }
    }

    /// A JSON number that is a whole number below 10^12 (`16`, `16.0`, `1.6e1`).
    private static func integer(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard range.count <= 32, let double = Double(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)),
              double.rounded() == double, double.magnitude < 1e12 else { return nil }
        return Int(double)
    }
}
