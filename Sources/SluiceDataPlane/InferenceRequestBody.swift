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
    /// `outputCap` is the key's most output tokens per request: a request asking for more is
    /// refused, and one naming no maximum is sent with `max_tokens` set to it.
    public static func parse(_ buffer: ByteBuffer, endpoint: InferenceEndpoint,
                             outputCap: Int? = nil) throws(OpenAIError) -> InferenceRequestBody {
        do {
            return try buffer.withUnsafeReadableBytes { bytes throws(OpenAIError) in
                try parse(bytes, buffer: buffer, endpoint: endpoint, outputCap: outputCap)
            }
        } catch {
            throw error
        }
    }

    private static func parse(_ bytes: UnsafeRawBufferPointer, buffer: ByteBuffer, endpoint: InferenceEndpoint,
                              outputCap: Int?) throws(OpenAIError) -> InferenceRequestBody {
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
        // Both fields are read: a server may honour either, so the larger one is what counts.
        var maxOutput: Int?
        for field in ["max_completion_tokens", "max_tokens"] {
            guard let member = members[field], member.kind != .null else { continue }
            guard member.kind == .number, let number = integer(bytes, member.value), number >= 1 else {
                throw .invalidRequest("'\(field)' must be a positive integer", param: field)
            }
            if let outputCap, number > outputCap { throw .outputAboveKeyCap(number, cap: outputCap, param: field) }
            maxOutput = max(maxOutput ?? 0, number)
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
        var splices: [(Range<Int>, String)] = []
        if stream {
            let splice = try usageSplice(bytes, options: members["stream_options"])
            clientWantsUsage = splice == nil
            if let splice { splices.append(splice) }
        }
        if let outputCap, maxOutput == nil, endpoint != .embeddings {
            splices.append((openingBrace(bytes)..<openingBrace(bytes), #""max_tokens":\#(outputCap),"#))
            maxOutput = outputCap
        }
        let upstreamBody = splices.isEmpty ? buffer : splice(bytes, splices)
        return InferenceRequestBody(model: model, stream: stream, clientWantsUsage: clientWantsUsage,
                                    maxOutputTokens: maxOutput, promptEstimate: max(1, bytes.count / 3),
                                    upstreamBody: upstreamBody)
    }

    /// Just after the body's `{` (the scanner has checked that the body is an object).
    private static func openingBrace(_ bytes: UnsafeRawBufferPointer) -> Int {
        bytes.firstIndex(of: UInt8(ascii: "{"))! + 1
    }

    /// The body with each range replaced by its text; the ranges do not overlap.
    private static func splice(_ bytes: UnsafeRawBufferPointer, _ splices: [(Range<Int>, String)]) -> ByteBuffer {
        var spliced = ByteBuffer()
        spliced.reserveCapacity(bytes.count + splices.reduce(0) { $0 + $1.1.utf8.count })
        var at = 0
        for (range, text) in splices.sorted(by: { $0.0.lowerBound < $1.0.lowerBound }) {
            spliced.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[at..<range.lowerBound]))
            spliced.writeString(text)
            at = range.upperBound
        }
        spliced.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[at...]))
        return spliced
    }

    /// Where to put `"include_usage": true` (bytes to replace, and with what), or nil when the
    /// client asked for usage itself.
    private static func usageSplice(_ bytes: UnsafeRawBufferPointer,
                                    options: JSONBodyScanner.Member?) throws(OpenAIError) -> (Range<Int>, String)? {
        guard let options, options.kind != .null else {
            if let options { return (options.value, #"{"include_usage":true}"#) }
            // No stream_options: add the member first in the object.
            let open = openingBrace(bytes)
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
